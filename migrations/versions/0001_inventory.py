"""Inventory tables (hardware_type, host, subnet, interface, service, host_service) and their rules.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0001_inventory.up.sql")


def downgrade() -> None:
    sqlfile.run("0001_inventory.down.sql")
