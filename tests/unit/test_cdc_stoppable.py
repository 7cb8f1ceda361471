"""Blocking calls the relay can walk away from when a stop is requested."""

from __future__ import annotations

import threading
import time

import pytest

from cdc import errors, stoppable


def test_returns_the_result_or_raises_the_error() -> None:
    stop = threading.Event()
    assert stoppable.call(lambda: 42, stop=stop) == 42
    assert stoppable.call(lambda: 7, stop=None) == 7

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        stoppable.call(fail, stop=stop)


def test_stop_abandons_the_call_at_once_and_cleans_up_its_late_result() -> None:
    stop = threading.Event()
    release = threading.Event()
    cleaned: list[str] = []
    cleaned_event = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "connection"

    def cleanup(value: str) -> None:
        cleaned.append(value)
        cleaned_event.set()

    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    with pytest.raises(errors.Stopping):
        stoppable.call(slow, stop=stop, cleanup=cleanup)
    assert time.monotonic() - start < 1.0
    assert not cleaned
    release.set()
    assert cleaned_event.wait(5)
    assert cleaned == ["connection"]


def test_a_stop_requested_before_the_call_never_starts_it() -> None:
    stop = threading.Event()
    stop.set()
    started: list[bool] = []
    with pytest.raises(errors.Stopping):
        stoppable.call(lambda: started.append(True), stop=stop)
    assert not started
