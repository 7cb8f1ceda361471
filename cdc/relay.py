"""The relay loop: wake on the doorbell, drain the outbox to the broker, re-arm, sleep.

    run ─► ensure PostgreSQL (query connection, leader lock, LISTEN connection)
        ─► ensure broker
        ─► cycle: disarm, drain until quiet for LINGER, arm, drain once more
        ─► idle: until a doorbell, the fallback interval, a raced change, a lost
           connection or stop
A lost connection closes only that side, waits a capped, jittered back-off and loops;
every (re)connect is followed by a drain, so nothing waits for the next write. Whenever
the relay holds a database connection (leading, standing by, or waiting for the broker)
it refreshes the backlog gauges every OBSERVE_INTERVAL.

Draining is pipelined: batch N+1 is read and sent while the receipt for batch N is on
its way; a batch leaves the outbox only after its receipt.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator

from cdc import broker, database, doorbell, errors, leader, metrics, outbox, status
from cdc.settings import Settings
from machinedb import daemon, db_url

logger = logging.getLogger(__name__)

IDLE_SLICE = 0.25  # seconds; longest wait before looking at stop and the broker
LIVENESS_INTERVAL = 15.0  # seconds between probes of the LISTEN connection when idle
OBSERVE_INTERVAL = 5.0  # seconds between backlog gauge updates, whatever the relay does
RECHECK_INITIAL = 0.02  # seconds; first look after the transactions that raced a re-arm
RECHECK_CAP = 1.0  # seconds
STOP_GRACE = 3.0  # seconds a stopping relay waits for the receipt of the batch in flight
LINGER = 0.5  # seconds the relay keeps looking (disarmed) after the last change it saw
LINGER_POLL = 0.1  # seconds between looks while lingering


class Relay:
    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self._settings = settings
        self._stop = stop
        self._work: database.Connection | None = None
        self._listen: database.Connection | None = None
        self._publisher: broker.Publisher | None = None
        self._is_leader = False
        self._watch: list[int] = []
        self._db_down = False
        self._broker_down = False
        self._db_backoff: Iterator[float] = daemon.backoff()
        self._broker_backoff: Iterator[float] = daemon.backoff()
        self._broker_retry_at = 0.0  # time.monotonic()
        self._observed_at = 0.0

    # ---- the outer loop -------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._ensure_database()
                    if self._stop.is_set():
                        break
                    self._ensure_broker()
                    if self._stop.is_set():
                        break
                    self._cycle()
                    self._idle()
                except errors.Stopping:
                    break
                except errors.DatabaseUnavailable as exc:
                    self._database_lost(exc)
                except errors.BrokerUnavailable as exc:
                    self._broker_lost(exc)
        finally:
            self._close()
        logger.info("relay stopped", extra={"action": "stopped"})

    # ---- connections ----------------------------------------------------------------

    def _ensure_database(self) -> None:
        url = self._settings.database_url
        if self._work is None:
            self._work = database.connect(url, stop=self._stop)
            self._listen = None
            logger.info(
                "connected to PostgreSQL %s", db_url.redact(url), extra={"action": "db_connected"}
            )
        if not self._is_leader:
            self._await_leadership(self._work)
        if self._listen is None and self._is_leader:
            self._listen = database.connect(url, stop=self._stop)
            doorbell.listen(self._listen)
        self._database_back()

    def _database_back(self) -> None:
        """The outage (if any) is over: this relay has the connections its role needs."""
        if self._db_down:
            metrics.RECONNECTS.labels(service="postgres").inc()
            self._db_down = False
            self._db_backoff = daemon.backoff()

    def _await_leadership(self, conn: database.Connection) -> None:
        announced = False
        while not self._stop.is_set():
            if leader.try_acquire(conn):
                self._is_leader = True
                metrics.LEADER.set(1)
                logger.info("leader: this relay publishes", extra={"action": "leader"})
                return
            if not announced:
                logger.info(
                    "standby: another relay holds the leader lock", extra={"action": "standby"}
                )
                announced = True
                self._database_back()
            self._pause(self._settings.standby_poll * random.uniform(0.8, 1.2))  # noqa: S311

    def _ensure_broker(self) -> None:
        if self._publisher is not None and self._publisher.broken is None:
            return
        if self._publisher is not None:
            self._publisher.close(polite=False)
            self._publisher = None
        self._pause(self._broker_retry_at - time.monotonic())  # the back-off after a loss
        if self._stop.is_set():
            return
        publisher = broker.Publisher(
            self._settings.broker,
            destination=self._settings.destination,
            heartbeat=self._settings.heartbeat,
            ssl_ca_file=self._settings.ssl_ca_file,
        )
        publisher.connect(stop=self._stop)
        self._publisher = publisher
        if self._broker_down:
            metrics.RECONNECTS.labels(service="broker").inc()
        self._broker_down = False
        self._broker_backoff = daemon.backoff()

    def _database_lost(self, exc: errors.DatabaseUnavailable) -> None:
        database.close(self._listen)
        database.close(self._work)
        self._listen = self._work = None
        if self._is_leader:
            metrics.LEADER.set(0)
        self._is_leader = False
        self._watch = []
        if not self._db_down:
            logger.warning(
                "PostgreSQL unavailable (%s); reconnecting", exc, extra={"action": "db_lost"}
            )
            self._db_down = True
        else:
            logger.debug("PostgreSQL still unavailable: %s", exc)
        self._stop.wait(next(self._db_backoff))

    def _broker_lost(self, exc: errors.BrokerUnavailable) -> None:
        """Drop the connection (no polite DISCONNECT: the broker failed, or is too slow for
        a stopping relay) and set the back-off; ``_ensure_broker`` waits it out, keeping
        the backlog gauges fresh meanwhile."""
        if self._publisher is not None:
            self._publisher.close(polite=False)
            self._publisher = None
        if not self._broker_down:
            logger.warning(
                "broker unavailable (%s); reconnecting", exc, extra={"action": "broker_lost"}
            )
            self._broker_down = True
        else:
            logger.debug("broker still unavailable: %s", exc)
        self._broker_retry_at = time.monotonic() + next(self._broker_backoff)

    def _close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        if self._is_leader and self._work is not None:
            # nobody listens any more: spare the writers the NOTIFY; the next leader
            # drains on start whatever the doorbell says
            with contextlib.suppress(errors.DatabaseUnavailable):
                doorbell.disarm(self._work)
        database.close(self._listen)
        database.close(self._work)  # releases the leader lock
        metrics.LEADER.set(0)

    # ---- work -----------------------------------------------------------------------

    def _cycle(self) -> None:
        """Disarm, drain until the outbox stays quiet, re-arm, drain once more.

        After activity the relay lingers disarmed for LINGER seconds, looking every
        LINGER_POLL: under a steady stream of writes it never re-arms, so writers never
        pay for a NOTIFY, and each look publishes everything that arrived meanwhile.
        """
        work, listen = self._conns()
        doorbell.discard_pending(listen)
        while not self._stop.is_set():
            doorbell.disarm(work)
            self._linger()
            if self._stop.is_set():
                return
            doorbell.arm(work)
            self._watch = doorbell.in_progress(work)
            if self._drain() == 0:
                break
        self._observe(force=True)

    def _linger(self) -> None:
        """Drain, then look again every LINGER_POLL until nothing came for LINGER."""
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            published = self._drain()
            now = time.monotonic()
            if published:
                quiet_since = now
            elif now - quiet_since >= LINGER:
                return
            # a short pause lets changes gather into one batch (one broker commit)
            self._stop.wait(LINGER_POLL)

    def _drain(self) -> int:
        """Publish the visible changes in id order until a read comes back short of a
        full batch (caught up); returns how many were published.

        Ids are taken at insert and rows become visible at commit, so a late commit can
        hide below the cursor: every drain starts again from the lowest id, and the
        relay's next look (lingering, a raced re-arm, a doorbell) finds such a row.
        """
        work, _ = self._conns()
        publisher = self._require_publisher()
        limit = self._settings.batch_size
        cursor, total = 0, 0
        inflight: broker.Batch | None = None
        while True:
            stopping = self._stop.is_set()
            rows = [] if stopping else outbox.fetch(work, after_id=cursor, limit=limit)
            batch = publisher.publish(rows) if rows else None
            if inflight is not None:
                self._confirm(publisher, inflight)
            inflight = batch
            self._observe()
            if rows:
                cursor = rows[-1].id
                total += len(rows)
            if len(rows) < limit:
                if inflight is not None:
                    self._confirm(publisher, inflight)
                return total

    def _confirm(self, publisher: broker.Publisher, batch: broker.Batch) -> None:
        work, _ = self._conns()
        grace_end: float | None = None
        while not publisher.wait_confirmed(batch, IDLE_SLICE):
            now = time.monotonic()
            if self._stop.is_set() and grace_end is None:
                grace_end = now + STOP_GRACE
            if grace_end is not None and now > grace_end:
                raise errors.BrokerUnavailable("stopping: batch in flight left for a resend")
            if now - batch.sent_at > self._settings.receipt_timeout:
                raise errors.BrokerUnavailable(
                    f"no receipt within {self._settings.receipt_timeout:.0f} s"
                )
            self._observe()
        outbox.delete(work, batch.ids)
        metrics.PUBLISHED.inc(len(batch.ids))
        metrics.BATCH_LATENCY.observe(time.monotonic() - batch.sent_at)

    def _idle(self) -> None:
        """Wait for a reason to drain again."""
        work, listen = self._conns()
        now = time.monotonic()
        fallback_at = now + self._settings.fallback_interval
        probe_at = now + LIVENESS_INTERVAL
        recheck, recheck_at = RECHECK_INITIAL, now + RECHECK_INITIAL
        while not self._stop.is_set():
            publisher = self._require_publisher()
            if publisher.broken is not None:
                raise errors.BrokerUnavailable(publisher.broken)
            now = time.monotonic()
            if now >= fallback_at:
                logger.debug("fallback interval elapsed: draining")
                return
            if self._watch and now >= recheck_at:
                if doorbell.all_finished(work, self._watch):
                    self._watch = []
                    if outbox.has_visible(work):
                        logger.debug("a change raced the re-arm: draining")
                        return
                recheck = min(RECHECK_CAP, recheck * 2)
                recheck_at = now + recheck
            if now >= probe_at:
                doorbell.probe(listen)
                probe_at = now + LIVENESS_INTERVAL
            self._observe()
            timeout = min(IDLE_SLICE, fallback_at - now)
            if self._watch:
                timeout = min(timeout, max(0.0, recheck_at - now))
            if doorbell.wait(listen, max(timeout, 0.001)):
                return

    # ---- helpers --------------------------------------------------------------------

    def _observe(self, *, force: bool = False) -> None:
        """Refresh the backlog gauges, at most every OBSERVE_INTERVAL unless forced."""
        now = time.monotonic()
        if not force and now - self._observed_at < OBSERVE_INTERVAL:
            return
        self._observed_at = now
        if self._work is not None:
            current = status.read(self._work)
            metrics.observe_backlog(current.backlog, current.oldest_age)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` or until stop, refreshing the backlog gauges on the way: the
        alert on the oldest change's age must see a broker outage or a stuck leader."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            self._observe()
            now = time.monotonic()
            if now >= end:
                return
            self._stop.wait(max(0.0, min(end, self._observed_at + OBSERVE_INTERVAL) - now))

    def _conns(self) -> tuple[database.Connection, database.Connection]:
        if self._work is None or self._listen is None:
            raise errors.DatabaseUnavailable("not connected")
        return self._work, self._listen

    def _require_publisher(self) -> broker.Publisher:
        if self._publisher is None:
            raise errors.BrokerUnavailable("not connected")
        return self._publisher
