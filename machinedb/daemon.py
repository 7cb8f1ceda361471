"""Plumbing for the long-running commands: stop signals and reconnect back-off."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType

logger = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5  # seconds
BACKOFF_CAP = 30.0  # seconds
FORCED_EXIT_CODE = 130


class StopSignal:
    """First SIGTERM/SIGINT asks for a graceful stop (``event`` is set); a second one
    forces the process out at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignal:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            logger.warning("second %s: exiting now", name, extra={"action": "force_stop"})
            os._exit(FORCED_EXIT_CODE)
        logger.info("%s received: stopping gracefully", name, extra={"action": "stopping"})
        self.event.set()


def backoff(initial: float = BACKOFF_INITIAL, cap: float = BACKOFF_CAP) -> Iterator[float]:
    """Capped exponential delays with jitter (between half and all of the step)."""
    step = initial
    while True:
        yield random.uniform(step / 2, step)  # noqa: S311  (jitter, not cryptography)
        step = min(cap, step * 2)
