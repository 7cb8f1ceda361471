"""The relay's work with its connections up: cycle (drain until quiet, re-arm, drain once
more), then idle until a reason to drain again.

The outbox, doorbell, publisher, stop event and clock are passed in (``cdc.ports``), and
each timing rule is decided by ``cdc.rules``, so unit tests drive this loop with fakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cdc import broker, errors, metrics, ports, rules

logger = logging.getLogger(__name__)

IDLE_SLICE = 0.25  # seconds; longest wait before looking at stop and the broker
LIVENESS_INTERVAL = 15.0  # seconds between probes of the LISTEN connection when idle
LINGER_POLL = 0.1  # seconds between looks while lingering


class Pump:
    def __init__(
        self,
        *,
        outbox: ports.Outbox,
        doorbell: ports.Doorbell,
        publisher: ports.Publisher,
        stop: ports.Stop,
        batch_size: int,
        receipt_timeout: float,  # seconds
        fallback_interval: float,  # seconds
        clock: ports.Clock = time.monotonic,
        observe: Callable[[], None] = lambda: None,  # refresh gauges (rate-limited)
    ) -> None:
        self._outbox = outbox
        self._doorbell = doorbell
        self._publisher = publisher
        self._stop = stop
        self._batch_size = batch_size
        self._receipt_timeout = receipt_timeout
        self._fallback_interval = fallback_interval
        self._clock = clock
        self._observe = observe
        self._watched: list[int] = []  # transactions in progress at the last re-arm

    def cycle(self) -> None:
        """Disarm, drain until the outbox stays quiet, re-arm, drain once more.

        After activity the relay lingers disarmed for LINGER seconds, looking every
        LINGER_POLL: under a steady stream of writes it never re-arms, so writers never
        pay for a NOTIFY, and each look publishes everything that arrived meanwhile.
        """
        self._doorbell.discard_pending()
        while not self._stop.is_set():
            self._doorbell.disarm()
            self.linger()
            if self._stop.is_set():
                return
            self._doorbell.arm()
            self._watched = self._doorbell.in_progress()
            if self.drain() == 0:
                break

    def linger(self) -> None:
        """Drain, then look again every LINGER_POLL until nothing came for LINGER."""
        linger = rules.Linger(quiet_since=self._clock())
        while not self._stop.is_set():
            published = self.drain()
            if not linger.keep_looking(now=self._clock(), published=published):
                return
            # a short pause lets changes gather into one batch (one broker commit)
            self._stop.wait(LINGER_POLL)

    def drain(self) -> int:
        """Publish the visible changes in id order until a read comes back short of a
        full batch (caught up); returns how many were published.

        Pipelined: batch N+1 is read and sent while the receipt for batch N is on its
        way; a batch leaves the outbox only after its receipt. Ids are taken at insert
        and rows become visible at commit, so a late commit can hide below the cursor:
        every drain starts again from the lowest id, and the relay's next look
        (lingering, a raced re-arm, a doorbell) finds such a row.
        """
        limit = self._batch_size
        cursor, total = 0, 0
        inflight: broker.Batch | None = None
        while True:
            stopping = self._stop.is_set()
            rows = [] if stopping else self._outbox.fetch(after_id=cursor, limit=limit)
            batch = self._publisher.publish(rows) if rows else None
            if inflight is not None:
                self.confirm(inflight)
            inflight = batch
            self._observe()
            if rows:
                cursor = rows[-1].id
                total += len(rows)
            if len(rows) < limit:
                if inflight is not None:
                    self.confirm(inflight)
                return total

    def confirm(self, batch: broker.Batch) -> None:
        """Wait for ``batch``'s receipt, then delete its rows; BrokerUnavailable when the
        receipt timeout or, once stopping, the stop grace runs out first."""
        wait = rules.ReceiptWait(sent_at=batch.sent_at, timeout=self._receipt_timeout)
        while not self._publisher.wait_confirmed(batch, IDLE_SLICE):
            reason = wait.give_up(now=self._clock(), stopping=self._stop.is_set())
            if reason is not None:
                raise errors.BrokerUnavailable(reason)
            self._observe()
        self._outbox.delete(batch.ids)
        metrics.PUBLISHED.inc(len(batch.ids))
        metrics.BATCH_LATENCY.observe(self._clock() - batch.sent_at)

    def idle(self) -> None:
        """Wait for a reason to drain again: a doorbell, the fallback interval, or a
        change that raced the re-arm (its transaction finished and the outbox is not
        empty). Returns at once when stop is set; BrokerUnavailable when the broker
        connection broke meanwhile."""
        now = self._clock()
        fallback_at = now + self._fallback_interval
        probe_at = now + LIVENESS_INTERVAL
        watch = rules.RaceWatch.start(self._watched, now=now)
        self._watched = []
        while not self._stop.is_set():
            if self._publisher.broken is not None:
                raise errors.BrokerUnavailable(self._publisher.broken)
            now = self._clock()
            if now >= fallback_at:
                logger.debug("fallback interval elapsed: draining")
                return
            if watch.due(now):
                finished = self._doorbell.all_finished(watch.xids)
                watch.looked(now=now, finished=finished)
                if finished and self._outbox.has_visible():
                    logger.debug("a change raced the re-arm: draining")
                    return
            if now >= probe_at:
                self._doorbell.probe()
                probe_at = now + LIVENESS_INTERVAL
            self._observe()
            timeout = min(IDLE_SLICE, fallback_at - now)
            limit = watch.wait_limit(now)
            if limit is not None:
                timeout = min(timeout, limit)
            if self._doorbell.wait(max(timeout, 0.001)):
                return
