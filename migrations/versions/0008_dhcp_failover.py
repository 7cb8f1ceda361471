"""Failover pairs of DHCP servers: dhcp_failover, one row per pair (its name, mode,
both servers, each server's peer endpoint and the timers), with the rules a pair must
keep (no self-pairing, one pair per server, distinct endpoints, equal scopes at commit).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from migrations import sqlfile

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlfile.run("0008_dhcp_failover.up.sql")


def downgrade() -> None:
    sqlfile.run("0008_dhcp_failover.down.sql")
