"""Name length: hardware_type.name and service.name at most 255 characters, refused
with a message that names the row and the rule instead of a btree size error.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0005_name_length.up.sql")


def downgrade() -> None:
    sqlfile.run("0005_name_length.down.sql")
