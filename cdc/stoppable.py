"""Blocking calls the relay walks away from when it is asked to stop.

Connecting can block for a whole timeout (a host that drops SYNs, a server that accepts
TCP and then says nothing). ``call`` runs such a call on a helper thread and returns its
result, or raises Stopping as soon as the stop event is set. An abandoned call finishes
on its own; whatever it returns then goes to ``cleanup`` (to be closed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from cdc import errors

T = TypeVar("T")

POLL = 0.05  # seconds between looks at the stop event


def call(
    fn: Callable[[], T],
    *,
    stop: threading.Event | None,
    cleanup: Callable[[T], object] | None = None,
) -> T:
    if stop is None:
        return fn()
    if stop.is_set():
        raise errors.Stopping("stop requested")
    lock = threading.Lock()
    done = threading.Event()
    result: list[T] = []
    failure: list[BaseException] = []
    abandoned = False

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
        else:
            with lock:
                if not abandoned:
                    result.append(value)
                    return
            if cleanup is not None:
                cleanup(value)
        finally:
            done.set()

    threading.Thread(target=target, name="cdc-blocking-call", daemon=True).start()
    while not done.wait(POLL):
        if stop.is_set():
            with lock:
                abandoned = not result  # else it has just succeeded: take the result
            if abandoned:
                raise errors.Stopping("stop requested")
    if failure:
        raise failure[0]
    return result[0]
