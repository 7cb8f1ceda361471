"""The coalescing rules: leading edge, one render per window, back-off after failures."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from generator import coalesce


def test_nothing_pending_means_no_render() -> None:
    assert coalesce.Coalescer(window=1.0).due(now=5.0, pending=False) is None


def test_first_change_renders_at_once() -> None:
    assert coalesce.Coalescer(window=1.0).due(now=5.0, pending=True) == 5.0


def test_isolated_change_after_quiet_renders_at_once() -> None:
    c = coalesce.Coalescer(window=1.0)
    c.rendered(end=10.0)
    assert c.due(now=12.0, pending=True) == 12.0


def test_change_within_window_waits_for_its_end() -> None:
    c = coalesce.Coalescer(window=1.0)
    c.rendered(end=10.0)
    assert c.due(now=10.2, pending=True) == 11.0


def test_full_prefetch_renders_at_once() -> None:
    c = coalesce.Coalescer(window=1.0)
    c.rendered(end=10.0)
    assert c.due(now=10.2, pending=True, full=True) == 10.2


def test_failure_backs_off_even_when_full() -> None:
    c = coalesce.Coalescer(window=1.0)
    c.failed(end=10.0, retry_in=4.0)
    assert c.due(now=10.5, pending=True, full=True) == 14.0
    c.rendered(end=15.0)
    assert c.due(now=16.5, pending=True) == 16.5


def simulate(arrivals: list[float], *, window: float, render_time: float) -> int:
    """Renders a loop with this coalescer makes for changes arriving at ``arrivals``."""
    c = coalesce.Coalescer(window=window)
    renders = 0
    now = 0.0
    index = 0
    pending = False
    while index < len(arrivals) or pending:
        due = c.due(now=now, pending=pending)
        next_arrival = arrivals[index] if index < len(arrivals) else None
        if due is not None and (next_arrival is None or due <= next_arrival):
            now = max(now, due)
            # everything that arrived before the render started is covered
            pending = False
            renders += 1
            now += render_time
            c.rendered(end=now)
            # arrivals during the render make it pending again
            while index < len(arrivals) and arrivals[index] <= now:
                index += 1
                pending = True
        else:
            assert next_arrival is not None
            now = max(now, next_arrival)
            index += 1
            pending = True
    return renders


def test_burst_of_ten_thousand_gives_a_handful_of_renders() -> None:
    arrivals = [i * 0.0004 for i in range(10_000)]  # 10,000 changes in 4 s
    assert simulate(arrivals, window=1.0, render_time=0.15) <= 6


@given(
    st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=200),
    st.floats(min_value=0.1, max_value=2.0),
)
def test_renders_are_bounded_by_window_and_every_change_is_covered(
    times: list[float], window: float
) -> None:
    arrivals = sorted(times)
    renders = simulate(arrivals, window=window, render_time=0.01)
    span = arrivals[-1] - arrivals[0]
    assert 1 <= renders <= min(len(arrivals), int(span / window) + 2)
