"""The relay's timing rules, each a small object that decides from the time it is given.

- ``Linger``: after activity, keep looking (disarmed) until nothing came for LINGER.
- ``RaceWatch``: the transactions in progress at the re-arm may have read "disarmed"
  and rung nothing; look at them with a doubling interval, and once all have finished,
  look at the outbox once.
- ``ReceiptWait``: give up on a batch's receipt after the receipt timeout, or STOP_GRACE
  after stop was asked, whichever comes first; the batch stays in the outbox for a resend.

Time is passed in, so the rules are tested without a clock, a database or a broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

LINGER = 0.5  # seconds the relay keeps looking (disarmed) after the last change it saw
RECHECK_INITIAL = 0.02  # seconds; first look after the transactions that raced a re-arm
RECHECK_CAP = 1.0  # seconds
STOP_GRACE = 3.0  # seconds a stopping relay waits for the receipt of the batch in flight


@dataclass
class Linger:
    quiet_since: float  # monotonic time of the last look that published something
    quiet: float = LINGER  # seconds

    def keep_looking(self, *, now: float, published: int) -> bool:
        """Record a look that published ``published`` changes; False once the outbox
        stayed quiet for ``quiet`` seconds (time to re-arm)."""
        if published:
            self.quiet_since = now
            return True
        return now - self.quiet_since < self.quiet


@dataclass
class RaceWatch:
    next_look: float  # monotonic
    xids: list[int] = field(default_factory=list)  # empty: nothing to watch
    interval: float = RECHECK_INITIAL  # seconds

    @classmethod
    def start(cls, xids: Sequence[int], *, now: float) -> RaceWatch:
        return cls(next_look=now + RECHECK_INITIAL, xids=list(xids))

    def due(self, now: float) -> bool:
        """Time to ask whether the watched transactions have finished?"""
        return bool(self.xids) and now >= self.next_look

    def looked(self, *, now: float, finished: bool) -> None:
        """Record the answer: finished ends the watch, otherwise look again later."""
        if finished:
            self.xids = []
            return
        self.interval = min(RECHECK_CAP, self.interval * 2)
        self.next_look = now + self.interval

    def wait_limit(self, now: float) -> float | None:
        """Seconds until the next look, None when nothing is watched."""
        return max(0.0, self.next_look - now) if self.xids else None


@dataclass
class ReceiptWait:
    sent_at: float  # monotonic time the batch was sent
    timeout: float  # seconds; the receipt timeout
    grace: float = STOP_GRACE  # seconds
    grace_end: float | None = None  # monotonic; set when stop is first seen

    def give_up(self, *, now: float, stopping: bool) -> str | None:
        """None to keep waiting, or why the batch is left for a resend."""
        if stopping and self.grace_end is None:
            self.grace_end = now + self.grace
        if self.grace_end is not None and now > self.grace_end:
            return "stopping: batch in flight left for a resend"
        if now - self.sent_at > self.timeout:
            return f"no receipt within {self.timeout:.0f} s"
        return None
