"""The STOMP side: connect (failover list, TLS, heart-beats) and publish confirmed batches.

A batch is one STOMP transaction (BEGIN, a persistent SEND per change, COMMIT with a
receipt) written to the socket in one call. ActiveMQ answers the receipt once the
commit is stored. stomp.py's receiver thread only records receipts, errors and
disconnects here; waiting and reconnecting happen in the relay's own thread.
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


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """Runs on stomp.py's receiver thread: record and notify, nothing else."""

    def __init__(self, state: threading.Condition) -> None:
        self.state = state
        self.connected = False
        self.broken: str | None = None
        self.receipts: set[str] = set()

    def on_connected(self, frame: Any) -> None:
        with self.state:
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
        self._state = threading.Condition()
        self._listener = _Listener(self._state)
        self._sequence = itertools.count(1)
        hosts = [(e.host, e.port) for e in config.endpoints]
        self._conn = stomp.Connection12(
            host_and_ports=hosts,
            heartbeats=(int(heartbeat * 1000), int(heartbeat * 1000)),
            reconnect_attempts_max=1,
            timeout=CONNECT_TIMEOUT,  # TCP connect and TLS handshake; the socket blocks after
            keepalive=True,
            auto_content_length=False,
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
        host = self._conn.transport.current_host_and_port
        logger.info(
            "connected to broker %s:%s",
            *(host or ("?", "?")),
            extra={"action": "broker_connected"},
        )

    def publish(self, changes: Sequence[message.Change]) -> Batch:
        """Send ``changes`` as one transaction; the receipt confirms all of them."""
        seq = next(self._sequence)
        tx, receipt = f"tx-{seq}", f"batch-{seq}"
        parts = [message.frame("BEGIN", {"transaction": tx})]
        parts.extend(
            message.send_frame(c, destination=self._destination, transaction=tx) for c in changes
        )
        parts.append(message.frame("COMMIT", {"transaction": tx, "receipt": receipt}))
        self._write(b"".join(parts))
        return Batch(receipt=receipt, ids=tuple(c.id for c in changes), sent_at=time.monotonic())

    def wait_confirmed(self, batch: Batch, timeout: float) -> bool:
        """True once the broker confirmed ``batch``, False if ``timeout`` passed first;
        BrokerUnavailable when the connection broke (the batch must be sent again)."""
        deadline = time.monotonic() + timeout
        with self._state:
            while batch.receipt not in self._listener.receipts:
                if self._listener.broken is not None:
                    raise errors.BrokerUnavailable(self._listener.broken)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._state.wait(left)
            self._listener.receipts.discard(batch.receipt)
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
