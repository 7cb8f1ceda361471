"""Change capture: the cdc schema, the outbox, capture triggers on every inventory table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0002_cdc.up.sql")


def downgrade() -> None:
    sqlfile.run("0002_cdc.down.sql")
