"""The generator daemon: messages ring the doorbell, the database says what to render.

One loop in the main thread waits for whichever comes first: a message, the time a
coalesced pass is due, a lost broker connection, or stop. A pass covers exactly the
messages received before its database snapshot began, and those are acknowledged
only after the config was applied (or found unchanged). Messages that name rows give
an incremental pass over those rows; a full pass runs on start, on every
(re)connect, for what cannot be re-read row by row, and every ``reconcile`` seconds,
when the state kept in memory is compared with a fresh read of everything
(``reconcile.Reconciliation``). So a lost queue or a missed message only delays.

The pass itself lives in ``passes.Pipeline`` and the broker in ``consumer.Consumer``:
both are handed in, so the loop's rules are tested with fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from generator import (
    apply,
    changes,
    coalesce,
    consumer,
    errors,
    passes,
    read,
    reconcile,
    settings,
)
from generator import metrics as metrics_module
from machinedb import daemon as machinedb_daemon
from machinedb import stomp_url

logger = logging.getLogger(__name__)

IDLE_WAIT = 0.5  # seconds; the longest the loop sleeps before looking at stop again


class StartupError(errors.GeneratorError):
    """A service the daemon needs is unreachable at start-up."""


class Broker(Protocol):
    """What the loop needs of ``consumer.Consumer``."""

    @property
    def connected(self) -> bool: ...
    def connect(self) -> None: ...
    def get(self, timeout: float) -> consumer.Delivery | None: ...
    def drain(self) -> list[consumer.Delivery]: ...
    def ack(self, deliveries: Sequence[consumer.Delivery]) -> int: ...
    def close(self) -> None: ...


class Daemon:
    def __init__(
        self,
        config: settings.Settings,
        *,
        stop: threading.Event,
        metrics: metrics_module.Metrics,
        broker: Broker,
        pipeline: passes.Pipeline,
        clock: reconcile.Clock = time.monotonic,
        backoff: Callable[[], Iterator[float]] = machinedb_daemon.backoff,
    ) -> None:
        self.config = config
        self.stop = stop
        self.metrics = metrics
        self.consumer = broker
        self.pipeline = pipeline
        self.clock = clock
        self.tables = read.tables_read(server=pipeline.server)
        self.coalescer = coalesce.Coalescer(window=config.window)
        self.pending: list[changes.Change] = []
        # the snapshot of the last full pass applied: a change it saw needs no pass
        self.applied: read.Visibility | None = None
        self.full_due = True  # a full pass on start
        self.dirty = True
        self.reconciler = reconcile.Reconciler(
            interval=config.reconcile_interval, grace=config.reconcile_grace, now=clock()
        )
        self._backoff = backoff
        self._broker_delays = backoff()
        self._render_delays = backoff()

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
            logger.info("stopped", extra={"action": "stopped"})

    def _start(self) -> None:
        try:
            self.consumer.connect()
        except consumer.BrokerUnavailable as exc:
            raise StartupError(str(exc)) from exc

    def _reconnect(self) -> bool:
        self.pending.clear()  # unacknowledged: the broker sends them again
        self.metrics.pending.set(0)
        self.reconciler.cancel()  # the reconnect's full read corrects and decides
        try:
            self.consumer.connect()
        except consumer.BrokerUnavailable as exc:
            delay = next(self._broker_delays)
            logger.warning("broker unavailable (%s); retrying in %.1f s", exc, delay)
            self.stop.wait(delay)
            return False
        self._broker_delays = self._backoff()
        self.full_due = self.dirty = True  # catch up on every reconnect
        return True

    def _step(self) -> None:
        now = self.clock()
        self._settle_reconciliation(now)
        if not self.pending and self.reconciler.due(now):
            self.full_due = self.dirty = True
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
            return  # a full pass after reconnecting instead
        self._pass(self.pending)

    def _receive(self, delivery: consumer.Delivery) -> None:
        item = changes.classify(delivery, tables=self.tables)
        self.metrics.messages.labels(item.kind).inc()
        if item.kind == changes.UNRELATED:
            self.consumer.ack([delivery])
            return
        self.reconciler.excuse(item.ref, now=self.clock())
        if self._covered(item):
            self.metrics.covered.inc()
            self.consumer.ack([delivery])
            return
        self.pending.append(item)
        self.metrics.pending.set(len(self.pending))
        self.dirty = True

    def _covered(self, item: changes.Change) -> bool:
        """The change is in the config in place already: it committed before the last
        full pass's snapshot, or before the last incremental pass's and that pass
        re-read its rows (a host and its new interface are two messages of one
        transaction: the host's pass covers the interface's)."""
        txid = item.txid
        if txid is None:
            return False
        if self.applied is not None and self.applied.saw(txid):
            return True
        return self.pipeline.reread(item.ref)

    def _pass(self, covered: Sequence[changes.Change]) -> None:
        """A pass for ``covered`` (all received before its snapshot); ack on success."""
        self.pending = []
        self.dirty = False
        full, self.full_due = self.full_due, False
        if full:
            visibility = self._full_pass(covered)
        else:
            plan = changes.plan(covered, server=self.pipeline.server)
            visibility = self.pipeline.incremental(plan)
        end = self.clock()
        if visibility is None:
            retry_in = next(self._render_delays)
            self.coalescer.failed(end=end, retry_in=retry_in)
            self.pending = [*covered, *self.pending]  # not acknowledged: kept for the retry
            self.metrics.pending.set(len(self.pending))
            self.dirty = True
            self.full_due = self.full_due or full
            logger.info("next render attempt in %.1f s", retry_in)
            return
        self._render_delays = self._backoff()
        self.coalescer.rendered(end=end)
        # Only a full pass's snapshot covers every row: a change committed before an
        # incremental pass's snapshot, about rows that pass did not re-read, is not in
        # the state yet and must not be taken as covered.
        self.applied = self.pipeline.whole
        applied_at = time.time()
        for item in covered:
            if item.captured_at is not None:
                self.metrics.commit_to_applied.observe(max(0.0, applied_at - item.captured_at))
        acked = self.consumer.ack([item.delivery for item in covered])
        self.metrics.pending.set(len(self.pending))
        logger.debug("acknowledged %d of %d covered messages", acked, len(covered))

    def _full_pass(self, covered: Sequence[changes.Change]) -> read.Visibility | None:
        reconciling = self.reconciler.due(self.clock())
        had_state = self.pipeline.state is not None
        visibility = self.pipeline.full()
        if visibility is not None and reconciling and had_state:
            refs = [item.ref for item in covered]
            self.reconciler.start(
                self.pipeline.last_suspects, now=self.clock(), seen=visibility, covered=refs
            )
        elif visibility is not None:
            self.reconciler.rescheduled(now=self.clock())
        return visibility

    def _settle_reconciliation(self, now: float) -> None:
        found = self.reconciler.finish(now)
        if found is None:
            return
        self.metrics.reconciliations.inc()
        if found:
            self.metrics.reconcile_differences.inc(len(found))
            shown = ", ".join(found[: passes.SHOWN_DIFFERENCES])
            logger.warning(
                "reconciliation: %d reservations differed between the incremental state"
                " and a full read (now corrected): %s",
                len(found),
                shown,
                extra={"action": "reconcile_differences", "differences": len(found)},
            )
        else:
            logger.info(
                "reconciliation: the incremental state equals a full read",
                extra={"action": "reconciled"},
            )


def run(
    config: settings.Settings, *, stop: threading.Event, metrics: metrics_module.Metrics
) -> None:
    """Build the daemon's collaborators from ``config`` and run it until ``stop``."""
    if config.stomp_url is None:
        raise StartupError("STOMP_URL is not set (e.g. stomp://user:pass@localhost:61613)")
    engine = read.make_engine(config.database_url)
    try:
        try:
            read.check_connection(engine)
            server = None if config.server is None else read.find_server(engine, config.server)
        except errors.GeneratorError as exc:
            raise StartupError(str(exc)) from exc
        apply.remove_stale_candidates(config.apply.output)
        broker = consumer.Consumer(
            broker=stomp_url.parse(config.stomp_url, kind=config.broker_kind),
            queue_name=config.queue,
            prefetch=config.prefetch,
            ssl_ca_file=config.ssl_ca_file,
        )
        hosts = passes.omapi_client(config.apply)
        pipeline = passes.Pipeline(
            engine, config=config.apply, metrics=metrics, server=server, hosts=hosts
        )
        try:
            Daemon(config, stop=stop, metrics=metrics, broker=broker, pipeline=pipeline).run()
        finally:
            if hosts is not None:
                hosts.close()
    finally:
        engine.dispose()
