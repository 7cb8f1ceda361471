"""A failover pair's mode may be NULL, and is by default: the server's own default
(ISC dhcpd: isc-failover; Kea: kea-hot-standby), so a pair written without a mode runs
on either kind of server. Downgrade: NULL modes become isc-failover, the old default.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0009_failover_mode_default.up.sql")


def downgrade() -> None:
    sqlfile.run("0009_failover_mode_default.down.sql")
