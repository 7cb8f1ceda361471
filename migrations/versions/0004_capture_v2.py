"""Capture v2: per-table generated trigger functions with static SQL (same outbox rows
as capture_v1, about a third of the cost per statement); every tracked table moves to it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0004_capture_v2.up.sql")


def downgrade() -> None:
    sqlfile.run("0004_capture_v2.down.sql")
