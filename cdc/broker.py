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

from cdc import errors, message
from machinedb.stomp_url import BrokerConfig

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds to wait for CONNECTED
DISCONNECT_TIMEOUT = 2.0  # seconds to wait for a clean DISCONNECT


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

    def connect(self) -> None:
        try:
            self._conn.connect(
                username=self._config.username,
                passcode=self._config.password,
                wait=False,
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
                if left <= 0:
                    break
                self._state.wait(left)
            if not self._listener.connected:
                reason = self._listener.broken or "no CONNECTED frame in time"
                self.close()
                raise errors.BrokerUnavailable(f"{self._config.redacted()}: {reason}")
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

    def close(self) -> None:
        """Disconnect, politely when the connection is healthy; never raises."""
        try:
            if self._conn.is_connected() and self._listener.broken is None:
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
