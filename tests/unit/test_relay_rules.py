"""The relay's timing rules, driven with fakes and a simulated clock (milliseconds each).

The linger, the doorbell re-arm race, the receipt timeout and the stop grace are
decided by ``cdc.rules`` and applied by ``cdc.pump``; here the outbox, doorbell and
publisher are fakes over one simulated world whose time moves only when the loop waits.
tests/integration/test_relay.py checks the same behaviour on real PostgreSQL and
ActiveMQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from cdc import broker, errors, message, pump, rules

RUNAWAY = 3600.0  # simulated seconds; a loop still going then has lost its exit


class Runaway(AssertionError):
    """The loop under test kept waiting long past every deadline it should have met."""


@dataclass
class Row:
    id: int
    xid: int
    inserted_at: float
    committed_at: float | None  # None: rolled back
    finished_at: float


class World:
    """Simulated time, the outbox rows with their transactions, and the doorbell."""

    def __init__(self) -> None:
        self.now = 0.0
        self.rows: list[Row] = []
        self.deleted: set[int] = set()
        self.armed_history: list[tuple[float, bool]] = [(0.0, True)]
        self.rang_up_to = 0.0  # rings at or before this were taken or discarded
        self.stop_at: float | None = None
        self.log: list[tuple[str, float, object]] = []

    def advance_to(self, when: float) -> None:
        self.now = max(self.now, when)
        if self.now > RUNAWAY:
            raise Runaway(f"still waiting at {self.now:.0f} simulated seconds")

    def write(self, at: float, *, commit_after: float = 0.0, rollback: bool = False) -> Row:
        """A transaction inserting one change at ``at``, ending ``commit_after`` later."""
        row_id = len(self.rows) + 1
        end = at + commit_after
        row = Row(row_id, 1000 + row_id, at, None if rollback else end, end)
        self.rows.append(row)
        return row

    def armed_at(self, when: float) -> bool:
        armed = True
        for changed_at, state in self.armed_history:
            if changed_at <= when:
                armed = state
        return armed

    def visible(self) -> list[Row]:
        return [
            r
            for r in self.rows
            if r.committed_at is not None
            and r.committed_at <= self.now
            and r.id not in self.deleted
        ]

    def rings_after(self, start: float) -> list[float]:
        """Commit times after ``start`` of rows whose trigger saw the doorbell armed."""
        return sorted(
            r.committed_at
            for r in self.rows
            if r.committed_at is not None
            and r.committed_at > start
            and self.armed_at(r.inserted_at)
        )


class FakeOutbox:
    def __init__(self, world: World) -> None:
        self.world = world

    def fetch(self, *, after_id: int, limit: int) -> list[message.Change]:
        rows = [r for r in self.world.visible() if r.id > after_id][:limit]
        return [message.Change(id=r.id, table="t", op="INSERT", body=b"{}") for r in rows]

    def delete(self, ids: Sequence[int]) -> None:
        self.world.log.append(("delete", self.world.now, tuple(ids)))
        self.world.deleted.update(ids)

    def has_visible(self) -> bool:
        return bool(self.world.visible())


class FakeDoorbell:
    def __init__(self, world: World) -> None:
        self.world = world

    def discard_pending(self) -> None:
        self.world.rang_up_to = self.world.now

    def disarm(self) -> None:
        self._set(False)

    def arm(self) -> None:
        self._set(True)

    def _set(self, armed: bool) -> None:
        self.world.armed_history.append((self.world.now, armed))
        self.world.log.append(("arm" if armed else "disarm", self.world.now, None))

    def in_progress(self) -> list[int]:
        now = self.world.now
        return [r.xid for r in self.world.rows if r.inserted_at <= now < r.finished_at]

    def all_finished(self, xids: Sequence[int]) -> bool:
        return all(r.finished_at <= self.world.now for r in self.world.rows if r.xid in xids)

    def wait(self, timeout: float) -> bool:
        world = self.world
        rings = world.rings_after(world.rang_up_to)
        if rings and rings[0] <= world.now + timeout:
            world.advance_to(rings[0])
            world.rang_up_to = rings[0]
            return True
        world.advance_to(world.now + timeout)
        return False

    def probe(self) -> None:
        pass


class FakePublisher:
    """Receipts arrive ``receipt_delay`` seconds after a batch is sent; None: never."""

    def __init__(self, world: World, receipt_delay: float | None = 0.01) -> None:
        self.world = world
        self.receipt_delay = receipt_delay
        self.broken: str | None = None
        self.sent = 0

    def publish(self, changes: Sequence[message.Change]) -> broker.Batch:
        self.sent += 1
        ids = tuple(c.id for c in changes)
        self.world.log.append(("publish", self.world.now, ids))
        return broker.Batch(receipt=f"batch-{self.sent}", ids=ids, sent_at=self.world.now)

    def wait_confirmed(self, batch: broker.Batch, timeout: float) -> bool:
        world = self.world
        if self.receipt_delay is not None:
            arrives = batch.sent_at + self.receipt_delay
            if arrives <= world.now + timeout:
                world.advance_to(arrives)
                return True
        world.advance_to(world.now + timeout)
        return False

    def close(self, *, polite: bool = True) -> None:
        pass


class FakeStop:
    def __init__(self, world: World) -> None:
        self.world = world

    def is_set(self) -> bool:
        return self.world.stop_at is not None and self.world.now >= self.world.stop_at

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None, "the relay never waits for stop without a timeout"
        end = self.world.now + timeout
        if self.world.stop_at is not None:
            end = min(end, max(self.world.now, self.world.stop_at))
        self.world.advance_to(end)
        return self.is_set()


def make_pump(
    world: World,
    *,
    receipt_delay: float | None = 0.01,
    batch_size: int = 100,
    receipt_timeout: float = 30.0,
    fallback_interval: float = 300.0,
) -> pump.Pump:
    return pump.Pump(
        outbox=FakeOutbox(world),
        doorbell=FakeDoorbell(world),
        publisher=FakePublisher(world, receipt_delay),
        stop=FakeStop(world),
        batch_size=batch_size,
        receipt_timeout=receipt_timeout,
        fallback_interval=fallback_interval,
        clock=lambda: world.now,
    )


def events(world: World, kind: str) -> list[tuple[float, object]]:
    return [(at, what) for name, at, what in world.log if name == kind]


# ---- the rule objects --------------------------------------------------------------------


def test_linger_looks_until_quiet_for_linger() -> None:
    linger = rules.Linger(quiet_since=10.0, quiet=0.5)
    assert linger.keep_looking(now=10.1, published=3)
    assert linger.keep_looking(now=10.55, published=0)  # 0.45 s of quiet
    assert not linger.keep_looking(now=10.61, published=0)


def test_race_watch_doubles_its_interval_up_to_the_cap_and_ends_when_finished() -> None:
    watch = rules.RaceWatch.start([7], now=0.0)
    assert not watch.due(0.01)
    assert watch.due(rules.RECHECK_INITIAL)
    intervals = []
    now = rules.RECHECK_INITIAL
    for _ in range(8):
        watch.looked(now=now, finished=False)
        intervals.append(watch.interval)
        now = watch.next_look
    assert intervals[:3] == [0.04, 0.08, 0.16]
    assert intervals[-1] == rules.RECHECK_CAP
    watch.looked(now=now, finished=True)
    assert not watch.due(now + 100)
    assert watch.wait_limit(now) is None
    assert rules.RaceWatch.start([], now=0.0).wait_limit(0.0) is None


def test_receipt_wait_gives_up_after_the_timeout_or_the_stop_grace() -> None:
    wait = rules.ReceiptWait(sent_at=0.0, timeout=30.0, grace=3.0)
    assert wait.give_up(now=29.9, stopping=False) is None
    assert wait.give_up(now=30.1, stopping=False) == "no receipt within 30 s"
    stopping = rules.ReceiptWait(sent_at=0.0, timeout=30.0, grace=3.0)
    assert stopping.give_up(now=1.0, stopping=True) is None  # the grace starts here
    assert stopping.give_up(now=3.9, stopping=True) is None
    assert stopping.give_up(now=4.1, stopping=True) == "stopping: batch in flight left for a resend"


# ---- the loop, with fakes ----------------------------------------------------------------


def test_a_steady_stream_is_published_without_re_arming_until_linger_after_the_last() -> None:
    """Changes every 0.2 s for 3 s: one disarm, no re-arm until LINGER after the last
    change, and each look publishes what arrived meanwhile."""
    world = World()
    for i in range(16):
        world.write(at=i * 0.2)
    make_pump(world).cycle()
    last = 15 * 0.2
    arms = events(world, "arm")
    assert len(events(world, "disarm")) == 1
    assert len(arms) == 1
    assert last + rules.LINGER <= arms[0][0] <= last + rules.LINGER + pump.LINGER_POLL + 0.05
    assert world.deleted == {r.id for r in world.rows}
    assert len(events(world, "publish")) == 16  # one look per change at this pace


def test_a_change_that_raced_the_re_arm_is_drained_soon_after_its_commit() -> None:
    """A writer inserts while the relay is disarmed (no ring), and commits long after the
    re-arm: the watch of the transactions in progress at the re-arm wakes the idle relay
    within RECHECK_CAP of the commit, not at the fallback interval."""
    world = World()
    world.write(at=0.0)  # the change that woke the relay
    raced = world.write(at=0.1, commit_after=4.9)  # read "disarmed"; commits at 5.0
    p = make_pump(world, fallback_interval=300.0)
    p.cycle()
    ((armed_at, _),) = events(world, "arm")
    assert armed_at < 1.0 and not world.armed_at(raced.inserted_at)
    p.idle()
    assert raced.committed_at is not None
    assert raced.committed_at <= world.now <= raced.committed_at + rules.RECHECK_CAP + 0.01
    p.cycle()
    assert raced.id in world.deleted


def test_a_watched_transaction_that_rolled_back_does_not_wake_the_relay() -> None:
    world = World()
    world.write(at=0.0)
    world.write(at=0.1, commit_after=1.0, rollback=True)
    p = make_pump(world, fallback_interval=60.0)
    p.cycle()
    started = world.now
    p.idle()
    assert world.now == pytest.approx(started + 60.0, abs=0.01)  # the fallback, nothing else


def test_a_doorbell_wakes_the_idle_relay_at_once() -> None:
    world = World()
    p = make_pump(world)
    p.cycle()
    assert events(world, "arm")
    started = world.now
    world.write(at=started + 7.0)  # armed: its commit rings
    p.idle()
    assert world.now == pytest.approx(started + 7.0, abs=0.001)


def test_a_batch_leaves_the_outbox_only_after_its_receipt_and_the_next_one_is_sent_meanwhile() -> (
    None
):
    world = World()
    for _ in range(25):
        world.write(at=0.0)
    make_pump(world, batch_size=10, receipt_delay=0.05).drain()
    kinds = [(name, what) for name, _, what in world.log]
    first, second, third = tuple(range(1, 11)), tuple(range(11, 21)), tuple(range(21, 26))
    assert kinds == [
        ("publish", first),
        ("publish", second),
        ("delete", first),
        ("publish", third),
        ("delete", second),
        ("delete", third),
    ]


def test_no_receipt_within_the_timeout_leaves_the_batch_for_a_resend() -> None:
    world = World()
    world.write(at=0.0)
    p = make_pump(world, receipt_delay=None, receipt_timeout=30.0)
    with pytest.raises(errors.BrokerUnavailable, match="no receipt within 30 s"):
        p.drain()
    assert 30.0 < world.now <= 30.0 + pump.IDLE_SLICE + 0.001
    assert world.deleted == set()


def test_a_stopping_relay_still_takes_a_receipt_that_comes_within_the_grace() -> None:
    world = World()
    world.write(at=0.0)
    world.stop_at = 1.0
    make_pump(world, receipt_delay=2.5).drain()
    assert world.deleted == {1}
    assert world.now == pytest.approx(2.5)


def test_a_stopping_relay_gives_up_a_missing_receipt_after_the_grace() -> None:
    world = World()
    world.write(at=0.0)
    world.stop_at = 1.0
    p = make_pump(world, receipt_delay=None, receipt_timeout=30.0)
    with pytest.raises(errors.BrokerUnavailable, match="stopping"):
        p.drain()
    grace_end = 1.0 + rules.STOP_GRACE
    assert grace_end < world.now <= grace_end + pump.IDLE_SLICE + 0.001
    assert world.deleted == set()


def test_stop_ends_the_linger_and_the_idle_wait_at_once() -> None:
    world = World()
    for i in range(100):
        world.write(at=i * 0.1)
    world.stop_at = 2.0
    p = make_pump(world)
    p.cycle()
    assert world.now == pytest.approx(2.0)
    assert events(world, "arm") == []  # a stopping relay does not re-arm
    p.idle()
    assert world.now == pytest.approx(2.0)
