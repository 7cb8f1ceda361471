"""What the relay's work loop talks to: the outbox, the doorbell, the publisher, stop.

The loop (``cdc.pump``) sees only these small interfaces, so its rules run against
fakes in unit tests; ``PostgresOutbox`` and ``PostgresDoorbell`` are the real ones over
the relay's connections, and ``cdc.broker.Publisher`` is the real publisher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cdc import broker, database, doorbell, message, outbox

Clock = Callable[[], float]  # monotonic seconds


class Stop(Protocol):
    """The relay's one stop event (``threading.Event`` is one)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Outbox(Protocol):
    def fetch(self, *, after_id: int, limit: int) -> list[message.Change]:
        """Up to ``limit`` committed changes with id > ``after_id``, in id order."""

    def delete(self, ids: Sequence[int]) -> None:
        """Forget changes the broker confirmed."""

    def has_visible(self) -> bool:
        """Is any committed change waiting?"""


class Doorbell(Protocol):
    def discard_pending(self) -> None: ...

    def disarm(self) -> None: ...

    def arm(self) -> None: ...

    def in_progress(self) -> list[int]:
        """Transactions running now (asked right after ``arm``)."""

    def all_finished(self, xids: Sequence[int]) -> bool: ...

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a ring; True when one rang."""

    def probe(self) -> None:
        """A round trip on the listening connection; raises when it is dead."""


class Publisher(Protocol):
    @property
    def broken(self) -> str | None: ...

    def publish(self, changes: Sequence[message.Change]) -> broker.Batch: ...

    def wait_confirmed(self, batch: broker.Batch, timeout: float) -> bool: ...

    def close(self, *, polite: bool = True) -> None: ...


@dataclass(frozen=True)
class PostgresOutbox:
    conn: database.Connection

    def fetch(self, *, after_id: int, limit: int) -> list[message.Change]:
        return outbox.fetch(self.conn, after_id=after_id, limit=limit)

    def delete(self, ids: Sequence[int]) -> None:
        outbox.delete(self.conn, ids)

    def has_visible(self) -> bool:
        return outbox.has_visible(self.conn)


@dataclass(frozen=True)
class PostgresDoorbell:
    work: database.Connection  # flips the doorbell, looks at transactions
    listen: database.Connection  # LISTENs

    def discard_pending(self) -> None:
        doorbell.discard_pending(self.listen)

    def disarm(self) -> None:
        doorbell.disarm(self.work)

    def arm(self) -> None:
        doorbell.arm(self.work)

    def in_progress(self) -> list[int]:
        return doorbell.in_progress(self.work)

    def all_finished(self, xids: Sequence[int]) -> bool:
        return doorbell.all_finished(self.work, xids)

    def wait(self, timeout: float) -> bool:
        return doorbell.wait(self.listen, timeout)

    def probe(self) -> None:
        doorbell.probe(self.listen)
