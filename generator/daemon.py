"""The generator daemon: messages ring the doorbell, the database says what to render.

One loop in the main thread waits for whichever comes first: a message, the time a
coalesced render is due, a lost broker connection, or stop. A render covers exactly
the messages received before its database snapshot began, and those are
acknowledged only after the config was applied (or found unchanged). It renders on
start and on every (re)connect, so a lost queue or a missed message only delays.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy

from generator import (
    apply,
    coalesce,
    consumer,
    errors,
    read,
    render,
    settings,
    syntax_check,
    validate,
)
from generator import memo as memo_module
from generator import metrics as metrics_module
from machinedb import daemon as machinedb_daemon
from machinedb import stomp_url

logger = logging.getLogger(__name__)

IDLE_WAIT = 0.5  # seconds; the longest the loop sleeps before looking at stop again


class StartupError(errors.GeneratorError):
    """A service the daemon needs is unreachable at start-up."""


class Daemon:
    def __init__(
        self,
        config: settings.Settings,
        *,
        stop: threading.Event,
        metrics: metrics_module.Metrics,
    ) -> None:
        if config.stomp_url is None:
            raise StartupError("STOMP_URL is not set (e.g. stomp://user:pass@localhost:61613)")
        self.config = config
        self.stop = stop
        self.metrics = metrics
        self.engine = read.make_engine(config.database_url)
        self.consumer = consumer.Consumer(
            broker=stomp_url.parse(config.stomp_url),
            queue_name=config.queue,
            prefetch=config.prefetch,
            ssl_ca_file=config.ssl_ca_file,
        )
        self.coalescer = coalesce.Coalescer(window=config.window)
        self.pending: list[consumer.Change] = []
        # what the config in place includes: changes it saw need no render
        self.applied: read.Visibility | None = None
        self.carry = Carry(max_rows=config.memo_rows)
        self.dirty = True  # render on start
        self._broker_delays = _fresh_backoff()
        self._render_delays = _fresh_backoff()

    def run(self) -> None:
        """Loop until stop is set. Raises ``StartupError`` if a service is unreachable."""
        try:
            self._start()
            while not self.stop.is_set():
                if not self.consumer.connected and not self._reconnect():
                    continue
                self._step()
        finally:
            self.consumer.close()
            self.engine.dispose()
            logger.info("stopped", extra={"action": "stopped"})

    def _start(self) -> None:
        apply.remove_stale_candidates(self.config.apply.output)
        try:
            read.check_connection(self.engine)
            self.consumer.connect()
        except (read.DatabaseUnavailable, consumer.BrokerUnavailable) as exc:
            raise StartupError(str(exc)) from exc

    def _reconnect(self) -> bool:
        self.pending.clear()  # unacknowledged: the broker sends them again
        self.metrics.pending.set(0)
        try:
            self.consumer.connect()
        except consumer.BrokerUnavailable as exc:
            delay = next(self._broker_delays)
            logger.warning("broker unavailable (%s); retrying in %.1f s", exc, delay)
            self.stop.wait(delay)
            return False
        self._broker_delays = _fresh_backoff()
        self.dirty = True  # catch up on every reconnect
        return True

    def _step(self) -> None:
        now = time.monotonic()
        full = len(self.pending) >= self.config.prefetch
        due = self.coalescer.due(now=now, pending=self.dirty, full=full)
        if due is None or due > now:
            wait = IDLE_WAIT if due is None else min(IDLE_WAIT, due - now)
            delivery = self.consumer.get(wait)
            if delivery is not None:
                self._receive(delivery)
            return
        for delivery in self.consumer.drain():
            self._receive(delivery)
        if not self.consumer.connected:
            return  # render after reconnecting instead
        self._render(self.pending)

    def _receive(self, delivery: consumer.Delivery) -> None:
        item = consumer.classify(delivery)
        self.metrics.messages.labels(item.kind).inc()
        if item.kind == consumer.UNRELATED:
            self.consumer.ack([delivery])
            return
        if item.txid is not None and self.applied is not None and self.applied.saw(item.txid):
            # The change committed before the snapshot behind the config in place.
            self.metrics.covered.inc()
            self.consumer.ack([delivery])
            return
        self.pending.append(item)
        self.metrics.pending.set(len(self.pending))
        self.dirty = True

    def _render(self, covered: Sequence[consumer.Change]) -> None:
        """Render for ``covered`` (all received before the snapshot) and ack on success."""
        self.pending = []
        self.dirty = False
        visibility = render_pass(
            self.engine, config=self.config.apply, metrics=self.metrics, carry=self.carry
        )
        end = time.monotonic()
        if visibility is None:
            retry_in = next(self._render_delays)
            self.coalescer.failed(end=end, retry_in=retry_in)
            self.pending = [*covered, *self.pending]  # not acknowledged: kept for the retry
            self.metrics.pending.set(len(self.pending))
            self.dirty = True
            logger.info("next render attempt in %.1f s", retry_in)
            return
        self._render_delays = _fresh_backoff()
        self.coalescer.rendered(end=end)
        self.applied = visibility
        applied_at = time.time()
        for item in covered:
            if item.captured_at is not None:
                self.metrics.commit_to_applied.observe(max(0.0, applied_at - item.captured_at))
        acked = self.consumer.ack([item.delivery for item in covered])
        self.metrics.pending.set(len(self.pending))
        logger.debug("acknowledged %d of %d covered messages", acked, len(covered))


def run(
    config: settings.Settings, *, stop: threading.Event, metrics: metrics_module.Metrics
) -> None:
    Daemon(config, stop=stop, metrics=metrics).run()


@dataclass
class Carry:
    """What a daemon keeps from one render pass to the next; a one-shot run needs none.

    Each pass still reads, validates and renders everything; ``memo`` spares the
    per-row work for unchanged rows, and ``checks`` what the checker already accepted.
    An inventory past ``max_rows`` (memory) is worked from scratch every pass."""

    max_rows: int = settings.MEMO_ROWS
    memo: memo_module.Memo = field(default_factory=memo_module.Memo)
    checks: syntax_check.Incremental = field(default_factory=syntax_check.Incremental)
    last_rows: int | None = None  # interfaces read by the last pass; None before the first

    def memo_for_pass(self) -> memo_module.Memo | None:
        """The memo, if the last pass read few enough rows; the first pass fills none."""
        if self.last_rows is not None and self.last_rows <= self.max_rows:
            return self.memo
        self.memo = memo_module.Memo()  # none yet, or past the limit: hold nothing
        return None


def prepare(
    engine: sqlalchemy.Engine,
    *,
    config: settings.ApplySettings,
    metrics: metrics_module.Metrics,
    carry: Carry | None = None,
) -> tuple[render.Document, read.Visibility]:
    """Read a snapshot, validate it and render it; report the rows left out."""
    started = time.monotonic()
    memo_ = None if carry is None else carry.memo_for_pass()
    try:
        with read.collector_paused():
            snapshot = read.read_snapshot(engine, rows=None if memo_ is None else memo_.rows)
            checked = validate.check(snapshot.inventory, memo=memo_)
            document = render.document(
                checked.inventory, fmt=config.fmt, options=config.options, memo=memo_
            )
    except BaseException:
        if memo_ is not None:
            memo_.abandon_pass()
        raise
    if memo_ is not None:
        memo_.end_pass()
    if carry is not None:
        carry.last_rows = len(snapshot.inventory.interfaces)
    for problem in checked.problems:
        logger.warning("skipped: %s", problem.message, extra={"action": "row_skipped"})
    metrics.render_seconds.observe(time.monotonic() - started)
    metrics.rows_skipped.set(len(checked.problems))
    metrics.reservations.set(len(checked.inventory.interfaces))
    return document, snapshot.visibility


def render_pass(
    engine: sqlalchemy.Engine,
    *,
    config: settings.ApplySettings,
    metrics: metrics_module.Metrics,
    carry: Carry | None = None,
) -> read.Visibility | None:
    """Read, validate, render and apply once; return what the applied config includes.

    Failures are reported, never raised: the config in place stays as it was, and
    None says to retry later."""
    try:
        document, visibility = prepare(engine, config=config, metrics=metrics, carry=carry)
        started = time.monotonic()
        check = None if carry is None else functools.partial(carry.checks.check, document=document)
        outcome = apply.apply(document.text, config=config, check=check)
        metrics.apply_seconds.observe(time.monotonic() - started)
    except read.DatabaseUnavailable as exc:
        metrics.renders.labels("db_unavailable").inc()
        logger.error("%s; keeping the config in place", exc, extra={"action": "db_unavailable"})
        return None
    except apply.WipeRefused as exc:
        metrics.renders.labels("refused").inc()
        logger.error("%s", exc, extra={"action": "refused"})
        return None
    except (errors.GeneratorError, OSError) as exc:
        metrics.renders.labels("failed").inc()
        logger.error(
            "render failed, keeping the config in place: %s", exc, extra={"action": "render_failed"}
        )
        return None
    metrics.renders.labels("applied" if outcome.changed else "unchanged").inc()
    metrics.confirmed()
    if outcome.changed:
        logger.info(
            "applied %d reservations to %s",
            outcome.reservations,
            config.output,
            extra={"action": "applied", "reservations": outcome.reservations},
        )
    return visibility


def _fresh_backoff() -> Iterator[float]:
    return machinedb_daemon.backoff()
