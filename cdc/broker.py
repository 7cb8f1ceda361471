"""The STOMP side: connect (failover list, TLS, heart-beats) and publish confirmed batches.

A batch is written to the socket in one call. On ActiveMQ it is one STOMP transaction
(BEGIN, a persistent SEND per change, COMMIT with a receipt): ActiveMQ answers the
receipt once the commit is stored. RabbitMQ answers a COMMIT's receipt before its
messages are confirmed, so there a batch is plain SENDs, each with its own receipt,
which RabbitMQ answers once the message is confirmed (``machinedb.broker_profile``).
stomp.py's receiver thread only records receipts, errors and disconnects here; waiting
and reconnecting happen in the relay's own thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import stomp
import stomp.exception

from cdc import errors, message, stoppable
from machinedb import broker_profile
from machinedb.stomp_url import BrokerConfig

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds for each of: TCP (and TLS) connect, CONNECTED
DISCONNECT_TIMEOUT = 2.0  # seconds to wait for a clean DISCONNECT
STOP_POLL = 0.1  # seconds between looks at the stop event while waiting for CONNECTED


@dataclass(frozen=True, kw_only=True)
class Batch:
    """Changes sent in one transaction, waiting for the broker's receipt."""

    receipt: str
    ids: tuple[int, ...]
    sent_at: float  # time.monotonic()
    # every receipt the batch needs, when it is more than ``receipt`` (one per SEND)
    receipts: tuple[str, ...] = ()

    @property
    def awaited(self) -> tuple[str, ...]:
        return self.receipts or (self.receipt,)


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """Runs on stomp.py's receiver thread: record and notify, nothing else."""

    def __init__(self, state: threading.Condition) -> None:
        self.state = state
        self.connected = False
        self.server: str | None = None  # CONNECTED's server header
        self.heartbeat: str | None = None  # CONNECTED's heart-beat header
        self.broken: str | None = None
        self.receipts: set[str] = set()

    def on_connected(self, frame: Any) -> None:
        with self.state:
            self.server = frame.headers.get("server")
            self.heartbeat = frame.headers.get("heart-beat")
            self.connected = True
            self.state.notify_all()

    def on_receipt(self, frame: Any) -> None:
        with self.state:
            self.receipts.add(frame.headers.get("receipt-id", ""))
            self.state.notify_all()

    def on_error(self, frame: Any) -> None:
        with self.state:
            self.broken = "broker error: " + frame.headers.get("message", "(no message)")
            self.state.notify_all()

    def on_disconnected(self) -> None:
        with self.state:
            self.broken = self.broken or "connection lost"
            self.state.notify_all()

    def on_heartbeat_timeout(self) -> None:
        with self.state:
            self.broken = "heart-beat timeout"
            self.state.notify_all()


class Publisher:
    """One STOMP connection that publishes batches to ``destination``."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        destination: str,
        heartbeat: float,
        ssl_ca_file: str | None = None,
    ) -> None:
        self._destination = destination
        self._heartbeat = heartbeat
        # until CONNECTED says otherwise: the configured kind, else ActiveMQ's ways
        self.profile = broker_profile.resolve(config.kind, None)
        self._state = threading.Condition()
        self._listener = _Listener(self._state)
        self._sequence = itertools.count(1)
        hosts = [(e.host, e.port) for e in config.endpoints]
        self._conn = stomp.Connection12(
            host_and_ports=hosts,
            heartbeats=(self.profile.heartbeat_ms(heartbeat),) * 2,
            reconnect_attempts_max=1,
            timeout=CONNECT_TIMEOUT,  # TCP connect and TLS handshake; the socket blocks after
            keepalive=True,
            auto_content_length=False,
            vhost=config.vhost,  # CONNECT's host header: RabbitMQ's virtual host
        )
        ssl_hosts = [(e.host, e.port) for e in config.endpoints if e.ssl]
        if ssl_hosts:
            self._conn.set_ssl(for_hosts=ssl_hosts, ca_certs=ssl_ca_file)
        self._conn.set_listener("cdc-relay", self._listener)
        self._config = config

    @property
    def broken(self) -> str | None:
        """Why the connection is unusable, or None while it is healthy."""
        return self._listener.broken

    def connect(self, *, stop: threading.Event | None = None) -> None:
        """Connect and wait for CONNECTED; BrokerUnavailable when that fails or takes
        longer than CONNECT_TIMEOUT, Stopping as soon as ``stop`` is set."""
        try:
            stoppable.call(
                lambda: self._conn.connect(
                    username=self._config.username,
                    passcode=self._config.password,
                    wait=False,
                ),
                stop=stop,
                cleanup=lambda _: self.close(polite=False),
            )
        except (stomp.exception.StompException, OSError) as exc:
            raise errors.BrokerUnavailable(
                f"cannot connect to {self._config.redacted()}: "
                f"{exc or 'no broker in the list accepted a connection'}"
            ) from exc
        deadline = time.monotonic() + CONNECT_TIMEOUT
        with self._state:
            while not self._listener.connected and self._listener.broken is None:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    break
                self._state.wait(min(left, STOP_POLL))
            connected, reason = self._listener.connected, self._listener.broken
        if not connected:
            self.close(polite=False)
            if stop is not None and stop.is_set():
                raise errors.Stopping("stop requested while connecting to the broker")
            raise errors.BrokerUnavailable(
                f"{self._config.redacted()}: {reason or 'no CONNECTED frame in time'}"
            )
        self.profile = broker_profile.resolve(self._config.kind, self._listener.server)
        host = self._conn.transport.current_host_and_port
        logger.info(
            "connected to broker %s:%s (%s, %s)",
            *(host or ("?", "?")),
            self._listener.server or "server unnamed",
            self.profile.kind,
            extra={"action": "broker_connected"},
        )
        if self.profile.rabbitmq:
            self._check_rabbitmq()

    def _check_rabbitmq(self) -> None:
        logger.debug(
            "RabbitMQ confirms a message no queue takes and drops it: consumer queues"
            " must exist before changes are published"
        )
        asked = self.profile.heartbeat_ms(self._heartbeat)
        granted = self._listener.heartbeat or "0,0"
        if asked and granted.split(",")[-1].strip() != str(asked):
            logger.warning(
                "RabbitMQ rounds heart-beats to whole seconds: asked %d ms, it expects %s"
                " (use a whole number of seconds, or --broker rabbitmq)",
                asked,
                granted,
            )

    def publish(self, changes: Sequence[message.Change]) -> Batch:
        """Send ``changes`` as one transaction; the receipt confirms all of them (on
        RabbitMQ: each SEND on its own, with one receipt per change)."""
        seq = next(self._sequence)
        if self.profile.confirm_per_send:
            return self._publish_confirmed(seq, changes)
        tx, receipt = f"tx-{seq}", f"batch-{seq}"
        parts = [message.frame("BEGIN", {"transaction": tx})]
        parts.extend(
            message.send_frame(c, destination=self._destination, transaction=tx) for c in changes
        )
        parts.append(message.frame("COMMIT", {"transaction": tx, "receipt": receipt}))
        self._write(b"".join(parts))
        return Batch(receipt=receipt, ids=tuple(c.id for c in changes), sent_at=time.monotonic())

    def _publish_confirmed(self, seq: int, changes: Sequence[message.Change]) -> Batch:
        receipts = tuple(f"batch-{seq}-{n}" for n in range(len(changes)))
        self._write(
            b"".join(
                message.send_frame(c, destination=self._destination, transaction=None, receipt=r)
                for c, r in zip(changes, receipts, strict=True)
            )
        )
        return Batch(
            receipt=receipts[-1],
            ids=tuple(c.id for c in changes),
            sent_at=time.monotonic(),
            receipts=receipts,
        )

    def wait_confirmed(self, batch: Batch, timeout: float) -> bool:
        """True once the broker confirmed ``batch``, False if ``timeout`` passed first;
        BrokerUnavailable when the connection broke (the batch must be sent again)."""
        deadline = time.monotonic() + timeout
        awaited, seen = batch.awaited, 0
        with self._state:
            while True:
                while seen < len(awaited) and awaited[seen] in self._listener.receipts:
                    seen += 1  # receipts come about in order: each is looked at once
                if seen == len(awaited):
                    break
                if self._listener.broken is not None:
                    raise errors.BrokerUnavailable(self._listener.broken)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
            self._listener.receipts.difference_update(awaited)
        return True

    def close(self, *, polite: bool = True) -> None:
        """Disconnect; never raises. Polite (DISCONNECT, then up to DISCONNECT_TIMEOUT for
        the broker to close) only when asked and the connection is healthy: a relay
        giving up on a slow broker, or stopping, just drops the socket."""
        try:
            if polite and self._conn.is_connected() and self._listener.broken is None:
                self._conn.disconnect()  # DISCONNECT with a receipt; the socket closes on it
                deadline = time.monotonic() + DISCONNECT_TIMEOUT
                with self._state:
                    while self._listener.broken is None and time.monotonic() < deadline:
                        self._state.wait(deadline - time.monotonic())
            self._conn.transport.disconnect_socket()
        except Exception:  # closing a broken connection may fail any way
            logger.debug("error while closing the broker connection", exc_info=True)

    def _write(self, data: bytes) -> None:
        if self._listener.broken is not None:
            raise errors.BrokerUnavailable(self._listener.broken)
        transport = self._conn.transport
        try:
            if transport.blocking:
                transport.send(data)
            else:  # TLS: stomp.py's io thread owns the socket
                transport.send_queue.put(data)
        except (stomp.exception.StompException, OSError) as exc:
            raise errors.BrokerUnavailable(f"send failed: {exc or type(exc).__name__}") from exc
