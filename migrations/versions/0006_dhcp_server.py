"""DHCP servers and their scopes: dhcp_server (plain, case-insensitively unique names) and
dhcp_server_subnet (which subnets each server serves), captured and granted like the
other inventory tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0006_dhcp_server.up.sql")


def downgrade() -> None:
    sqlfile.run("0006_dhcp_server.down.sql")
