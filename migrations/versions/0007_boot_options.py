"""Boot options for network installs: next_server, boot_file and a boot file per client
architecture (BIOS, x64 UEFI, ARM64 UEFI) on subnet, hardware_type and host, with
the precedence host over hardware type over subnet; file names and addresses checked.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0007_boot_options.up.sql")


def downgrade() -> None:
    sqlfile.run("0007_boot_options.down.sql")
