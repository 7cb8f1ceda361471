"""Waiting for a condition with a deadline: the one polling loop the tests and harnesses use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any],
    *,
    deadline: float,
    what: str = "",
    every: float = 0.05,
    error: type[Exception] = AssertionError,
) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; raise
    ``error`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise error(f"timed out after {deadline:g} s waiting for {what or condition}")
        time.sleep(every)
