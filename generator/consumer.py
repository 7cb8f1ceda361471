"""The generator's durable subscription: change messages in, acknowledgements out.

stomp.py calls the listener on its receiver thread; the listener only hands frames
to a queue (and sets flags). The daemon's main thread takes them off, decides, and
acknowledges: client-individual acks, so a message is gone from the broker only
after the config that covers it was applied. The prefetch (``activemq.prefetchSize``,
RabbitMQ's ``prefetch-count``) bounds how many unacknowledged messages the broker sends
before it waits for acks. Nothing is ever NACKed (RabbitMQ would requeue it, ActiveMQ
dead-letter it): what was not acknowledged comes back after a reconnect.

The broker's kind (configured, else named by CONNECTED) says how the durable queue is
subscribed (``machinedb.broker_profile``): ActiveMQ fills
``/queue/Consumer.<name>.VirtualTopic.X`` itself; on RabbitMQ the generator reads
``/amq/queue/Consumer.<name>.VirtualTopic.X`` when it exists, and otherwise declares it
(durable, bound to the topic) with a SUBSCRIBE to the topic, on a new connection.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import stomp
from stomp import exception as stomp_exception

from generator import errors
from machinedb import broker_profile, stomp_url

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds to get CONNECTED and the SUBSCRIBE receipt
HEARTBEAT = 10_000  # milliseconds, both ways: a dead broker is noticed within ~15 s
SUBSCRIPTION_ID = "dhcp-generator"


class BrokerUnavailable(errors.GeneratorError):
    """The broker could not be reached, or refused the connection or subscription."""


class SubscriptionRefused(BrokerUnavailable):
    """The broker answered a SUBSCRIBE with an ERROR frame (e.g. no such queue)."""


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One MESSAGE frame, as received (the body is not trusted or even parsed here)."""

    generation: int  # the connection it came on; acks are valid only on that one
    ack_id: str
    headers: Mapping[str, str]
    body: str
    received: float  # monotonic


@dataclass(frozen=True)
class _Disconnected:
    generation: int


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """Runs on stomp.py's receiver thread: record, never block, never reconnect."""

    def __init__(self, inbox: queue.Queue[Delivery | _Disconnected], generation: int) -> None:
        self.inbox = inbox
        self.generation = generation
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.lost = threading.Event()  # the connection dropped: stop waiting for it
        self.error: str | None = None
        self.server: str | None = None  # CONNECTED's server header

    def on_connected(self, frame: stomp.utils.Frame) -> None:
        self.server = frame.headers.get("server")
        self.connected.set()

    def on_receipt(self, frame: stomp.utils.Frame) -> None:
        if frame.headers.get("receipt-id") == _receipt(self.generation):
            self.subscribed.set()

    def on_error(self, frame: stomp.utils.Frame) -> None:
        self.error = frame.headers.get("message", "ERROR frame")
        logger.error("broker error: %s", self.error)

    def on_message(self, frame: stomp.utils.Frame) -> None:
        headers = dict(frame.headers)
        body = frame.body if isinstance(frame.body, str) else str(frame.body)
        self.inbox.put(
            Delivery(
                generation=self.generation,
                ack_id=headers.get("ack") or headers.get("message-id", ""),
                headers=headers,
                body=body,
                received=time.monotonic(),
            )
        )

    def on_disconnected(self) -> None:
        self.lost.set()
        self.inbox.put(_Disconnected(self.generation))


class Consumer:
    """One subscription to ``queue`` on the first reachable broker of ``broker``."""

    def __init__(
        self,
        *,
        broker: stomp_url.BrokerConfig,
        queue_name: str,
        prefetch: int,
        ssl_ca_file: str | None = None,
    ) -> None:
        self.broker = broker
        self.ssl_ca_file = ssl_ca_file
        self.queue_name = queue_name
        self.prefetch = prefetch
        self._inbox: queue.Queue[Delivery | _Disconnected] = queue.Queue()
        self._generations = itertools.count(1)
        self._generation = 0
        self._conn: stomp.Connection12 | None = None
        self.profile: broker_profile.Profile | None = None  # known once connected

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self, *, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect and subscribe, waiting for the broker to confirm both. A refused
        SUBSCRIBE is followed by the profile's next way to subscribe, if any, on a new
        connection (a broker closes the connection after an ERROR frame)."""
        self.close()
        attempt = 0
        while True:
            try:
                self._connect(attempt, timeout=timeout)
                return
            except SubscriptionRefused as exc:
                attempt += 1
                if self.profile is None or attempt >= len(self._subscriptions(self.profile)):
                    raise
                logger.info("%s; subscribing another way", exc)

    def _subscriptions(
        self, profile: broker_profile.Profile
    ) -> tuple[broker_profile.Subscription, ...]:
        return profile.subscriptions(self.queue_name, prefetch=self.prefetch)

    def _connect(self, attempt: int, *, timeout: float) -> None:
        generation = next(self._generations)
        listener = _Listener(self._inbox, generation)
        conn = stomp.Connection12(
            [(e.host, e.port) for e in self.broker.endpoints],
            heartbeats=(HEARTBEAT, HEARTBEAT),
            reconnect_attempts_max=1,
            timeout=timeout,
            vhost=self.broker.vhost,  # CONNECT's host header: RabbitMQ's virtual host
        )
        for endpoint in self.broker.endpoints:
            if endpoint.ssl:
                conn.set_ssl(for_hosts=[(endpoint.host, endpoint.port)], ca_certs=self.ssl_ca_file)
        conn.set_listener("generator", listener)
        try:
            conn.connect(self.broker.username, self.broker.password, wait=False)
            _wait(listener, listener.connected, timeout, what="CONNECTED")
            self.profile = broker_profile.resolve(self.broker.kind, listener.server)
            subscription = self._subscriptions(self.profile)[attempt]
            conn.subscribe(
                subscription.destination,
                id=SUBSCRIPTION_ID,
                ack="client-individual",
                headers={**subscription.headers, "receipt": _receipt(generation)},
            )
            _wait(listener, listener.subscribed, timeout, what="SUBSCRIBE receipt")
        except (stomp_exception.StompException, OSError, BrokerUnavailable) as exc:
            _quiet_disconnect(conn)
            if isinstance(exc, BrokerUnavailable):
                raise
            reason = str(exc) or "could not connect"
            raise BrokerUnavailable(f"{self.broker.redacted()}: {reason}") from exc
        self._conn = conn
        self._generation = generation
        logger.info(
            "subscribed to %s on %s (%s, prefetch %d)",
            subscription.destination,
            self.broker.redacted(),
            self.profile.kind,
            self.prefetch,
            extra={"action": "subscribed"},
        )

    def get(self, timeout: float) -> Delivery | None:
        """The next delivery of this connection, or None on timeout or disconnect."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            result = self._accept(item)
            if result is not None or not self.connected:
                return result
            if time.monotonic() >= deadline:
                return None

    def drain(self) -> list[Delivery]:
        """Every delivery already received, without waiting."""
        found: list[Delivery] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return found
            delivery = self._accept(item)
            if delivery is not None:
                found.append(delivery)

    def ack(self, deliveries: Iterable[Delivery]) -> int:
        """Acknowledge deliveries of the current connection; return how many were sent."""
        conn = self._conn
        sent = 0
        if conn is None:
            return 0
        try:
            for delivery in deliveries:
                if delivery.generation == self._generation:
                    conn.ack(delivery.ack_id)
                    sent += 1
        except (stomp_exception.StompException, OSError) as exc:
            # The broker will redeliver what was not acknowledged: at most one more
            # idempotent render, never a lost change.
            logger.warning("ack failed after %d messages: %s", sent, exc)
            self._lost()
        return sent

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _quiet_disconnect(conn)

    def _accept(self, item: Delivery | _Disconnected) -> Delivery | None:
        if isinstance(item, _Disconnected):
            if item.generation == self._generation and self._conn is not None:
                self._lost()
            return None
        if item.generation != self._generation:
            return None  # from an old connection: the broker redelivers it
        return item

    def _lost(self) -> None:
        if self._conn is not None:
            logger.warning(
                "lost the broker connection %s",
                self.broker.redacted(),
                extra={"action": "disconnected"},
            )
        self.close()


def _receipt(generation: int) -> str:
    return f"subscribe-{generation}"


def _wait(listener: _Listener, event: threading.Event, timeout: float, *, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not event.wait(0.05):
        if listener.error is not None:
            _refused(listener.error, what)
        if listener.lost.is_set():  # e.g. a broker killed during the handshake
            raise BrokerUnavailable(f"connection lost while waiting for {what}")
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(f"no {what} within {timeout:g} s")
    if listener.error is not None:  # RabbitMQ answers a refused SUBSCRIBE's receipt too
        _refused(listener.error, what)


def _refused(error: str, what: str) -> None:
    if what == "SUBSCRIBE receipt":
        raise SubscriptionRefused(f"broker refused the subscription: {error}")
    raise BrokerUnavailable(f"broker refused: {error}")


def _quiet_disconnect(conn: stomp.Connection12) -> None:
    try:
        if conn.is_connected():
            conn.disconnect()
        else:
            conn.transport.stop()
    except (stomp_exception.StompException, OSError, RuntimeError) as exc:
        logger.debug("disconnect: %s", exc)
