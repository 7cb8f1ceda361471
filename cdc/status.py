"""``cdc-relay status``: backlog, lag, doorbell and leader, for an operator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdc import database, leader, sqlfiles


@dataclass(frozen=True, kw_only=True)
class Status:
    backlog: int
    oldest_age: float | None  # seconds
    armed: bool
    leader: str | None  # the leader's application_name

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Status:
        backlog, oldest_age, armed, leader_name = row
        return cls(
            backlog=int(backlog),
            oldest_age=None if oldest_age is None else float(oldest_age),
            armed=bool(armed),
            leader=leader_name,
        )

    def lines(self) -> list[str]:
        age = "-" if self.oldest_age is None else f"{self.oldest_age:.1f} s"
        return [
            f"backlog: {self.backlog} changes",
            f"oldest unpublished change: {age}",
            f"doorbell: {'armed (relay idle)' if self.armed else 'disarmed (relay busy or gone)'}",
            f"leader: {self.leader or 'none (no relay is running)'}",
        ]


def read(conn: database.Connection) -> Status:
    with database.translated():
        row = conn.execute(sqlfiles.load("status"), {"lock_key": leader.LOCK_KEY}).fetchone()
    assert row is not None
    return Status.from_row(row)
