"""What ``cdc-relay status`` prints."""

from __future__ import annotations

from cdc import status


def test_busy_relay() -> None:
    current = status.Status.from_row((12, 3.25, False, "cdc-relay host1 pid 42"))
    assert current.lines() == [
        "backlog: 12 changes",
        "oldest unpublished change: 3.2 s",
        "doorbell: disarmed (relay busy or gone)",
        "leader: cdc-relay host1 pid 42",
    ]


def test_no_relay_and_empty_outbox() -> None:
    current = status.Status.from_row((0, None, True, None))
    assert current.oldest_age is None
    assert current.lines()[1] == "oldest unpublished change: -"
    assert current.lines()[3] == "leader: none (no relay is running)"
