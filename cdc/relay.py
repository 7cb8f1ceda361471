"""The relay loop: wake on the doorbell, drain the outbox to the broker, re-arm, sleep.

    run ─► ensure PostgreSQL (query connection, leader lock, LISTEN connection)
        ─► ensure broker
        ─► cycle: disarm, drain until quiet for LINGER, arm, drain once more
        ─► idle: until a doorbell, the fallback interval, a raced change, a lost
           connection or stop

The cycle and the idle wait live in ``cdc.pump`` (draining is pipelined there: a batch
leaves the outbox only after its receipt), their timing rules in ``cdc.rules``; this
module holds the connections and rides out their losses. A lost connection closes only
that side, waits a capped, jittered back-off and loops; every (re)connect is followed by
a drain, so nothing waits for the next write. Whenever the relay holds a database
connection (leading, standing by, or waiting for the broker) it refreshes the backlog
gauges every OBSERVE_INTERVAL.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator

from cdc import broker, database, doorbell, errors, leader, metrics, ports, pump, status
from cdc.settings import Settings
from machinedb import daemon, db_url

logger = logging.getLogger(__name__)

OBSERVE_INTERVAL = 5.0  # seconds between backlog gauge updates, whatever the relay does


class Relay:
    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self._settings = settings
        self._stop = stop
        self._work: database.Connection | None = None
        self._listen: database.Connection | None = None
        self._publisher: broker.Publisher | None = None
        self._is_leader = False
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
                    work = self._pump()
                    work.cycle()
                    self._observe(force=True)
                    work.idle()
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

    def _pump(self) -> pump.Pump:
        """The work loop over this relay's current connections."""
        work, listen = self._conns()
        return pump.Pump(
            outbox=ports.PostgresOutbox(work),
            doorbell=ports.PostgresDoorbell(work, listen),
            publisher=self._require_publisher(),
            stop=self._stop,
            batch_size=self._settings.batch_size,
            receipt_timeout=self._settings.receipt_timeout,
            fallback_interval=self._settings.fallback_interval,
            observe=self._observe,
        )

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
