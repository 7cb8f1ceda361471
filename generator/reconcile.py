"""When to compare the incremental state with a full read, and what counts as drift.

Every ``interval`` seconds a full pass rebuilds the state from scratch. Where the new
state differs from the one the incremental passes kept, the difference is either
drift (a message lost or misapplied: a bug to report) or a change still on its way
(committed, but its message not yet received). A difference is only counted once no
message named its rows, neither among the messages that read covered nor later, and
``grace`` seconds passed with no message about a change the read already saw (so a
relay or a broker running behind only delays the verdict). A lost broker connection
cancels the comparison: the reconnect's own full read corrects everything, and while
disconnected no message could explain anything. The config is corrected at once
either way.
Time is passed in, so the rules are tested without a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from generator import read
from machinedb import change_message as contract

Clock = Callable[[], float]


@dataclass(frozen=True, kw_only=True)
class Suspect:
    """A reservation that differed, and the rows whose messages would explain it."""

    label: str  # e.g. "10.0.0.5 (interface 7)"
    interfaces: frozenset[int]
    hosts: frozenset[int]


class Reconciler:
    def __init__(self, *, interval: float, grace: float, now: float) -> None:
        self.interval = interval  # seconds; 0 turns reconciliation off
        self.grace = grace  # seconds
        self.next_at = now + interval
        self._open: list[Suspect] | None = None
        self._until = 0.0
        self._seen: read.Visibility | None = None  # the reconciling read's snapshot

    def due(self, now: float) -> bool:
        """True when a reconciling full pass should run now."""
        return self.interval > 0 and self._open is None and now >= self.next_at

    def rescheduled(self, *, now: float) -> None:
        """A full pass ran for another reason: it counts as the reconciliation's read."""
        self.next_at = now + self.interval

    def start(
        self,
        suspects: Iterable[Suspect],
        *,
        now: float,
        seen: read.Visibility | None = None,
        covered: Iterable[contract.ChangeRef] = (),
    ) -> None:
        """A reconciling full read (snapshot ``seen``) found ``suspects``; ``covered`` are
        the messages it covered, which explain some of them already."""
        self._open = list(suspects)
        self._until = now + self.grace
        self._seen = seen
        self.next_at = now + self.interval
        for ref in covered:
            self.excuse(ref)

    def cancel(self) -> None:
        """Drop a comparison under way (the broker connection was lost)."""
        self._open = None

    def excuse(self, ref: contract.ChangeRef, *, now: float | None = None) -> None:
        """A message arrived: the differences on the rows it names were on their way.
        One about a change the reconciling read already saw shows the pipeline is still
        catching up to that read: the verdict waits ``grace`` more seconds."""
        if self._open is None:
            return
        seen = self._seen
        if now is not None and ref.txid is not None and seen is not None and seen.saw(ref.txid):
            self._until = max(self._until, now + self.grace)
        if not self._open:
            return
        if not ref.names_rows():
            self._open = []  # a truncate or a malformed key may explain anything
            return
        if ref.table == "interface":
            id_ = ref.key("id")
            self._open = [s for s in self._open if id_ not in s.interfaces]
        elif ref.table == "host":
            id_ = ref.key("id")
            self._open = [s for s in self._open if id_ not in s.hosts]
        else:
            self._open = []  # a subnet or scope change touches any reservation

    def finish(self, now: float) -> list[str] | None:
        """After the grace period: the differences nothing explained (None before)."""
        if self._open is None or now < self._until:
            return None
        found, self._open = [s.label for s in self._open], None
        return found
