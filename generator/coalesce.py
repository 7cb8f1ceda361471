"""When to render: at once after a quiet spell, otherwise once per window.

The first change after a quiet period renders immediately (leading edge). Changes
that arrive while a render runs, or within ``window`` seconds after it ended, wait
for the window to pass and are then covered by one more render. When the broker has
stopped sending (the prefetch is full), waiting gains nothing: render at once.
Time is passed in, so the rules are tested without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Coalescer:
    window: float  # seconds of quiet kept after each render
    last_end: float | None = None  # monotonic time the last render ended
    not_before: float = 0.0  # monotonic time; set after a failure, to back off

    def due(self, *, now: float, pending: bool, full: bool = False) -> float | None:
        """The monotonic time the next render should start, or None if nothing waits."""
        if not pending:
            return None
        start = now if full or self.last_end is None else self.last_end + self.window
        return max(now, start, self.not_before)

    def rendered(self, *, end: float) -> None:
        """Record that a render ended at ``end`` (monotonic) and succeeded."""
        self.last_end = end
        self.not_before = 0.0

    def failed(self, *, end: float, retry_in: float) -> None:
        """Record a failed render: the next one waits ``retry_in`` seconds at least."""
        self.last_end = end
        self.not_before = end + retry_in
