"""Least-privilege group roles: machinedb_app, machinedb_relay, machinedb_generator.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0003_roles.up.sql")


def downgrade() -> None:
    sqlfile.run("0003_roles.down.sql")
