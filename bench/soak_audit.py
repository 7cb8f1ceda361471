"""An independent reader of the change topic: every event-id the broker delivered.

It reads a VirtualTopic consumer queue of its own and acknowledges each message only
after recording its event-id (``client-individual``): with ``ack:auto`` the broker
forgets a message once dispatched, so a broker crash with frames still in the socket
would look like a loss in the relay. What it recorded but could not acknowledge before
a crash comes again, and counts as a duplicate.

On ActiveMQ it reads ``/queue/Consumer.<name>.VirtualTopic.X``; on RabbitMQ the same
durable queue as ``/amq/queue/Consumer.<name>.VirtualTopic.X``, logged in to the node's
virtual host (the soak gives the destination, headers and login).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from typing import Any

import stomp

logger = logging.getLogger("soak.audit")

PREFETCH = 2000  # messages in flight to the auditor
RECONNECT_PAUSE = 0.5  # seconds between attempts while the broker is down


class Auditor(stomp.ConnectionListener):  # type: ignore[misc]
    """Counts event-ids read from ``queue``; reconnects on a thread of its own.

    ``headers``: extra SUBSCRIBE headers (default: ActiveMQ's prefetch); ``login``:
    user and password, if the broker wants them; ``vhost``: CONNECT's host header.
    """

    def __init__(
        self,
        port: int,
        queue: str,
        *,
        headers: dict[str, str] | None = None,
        login: tuple[str, str] | None = None,
        vhost: str | None = None,
    ) -> None:
        self.port = port
        self.queue = queue
        self.headers = headers if headers is not None else {"activemq.prefetchSize": str(PREFETCH)}
        self.login = login
        self.vhost = vhost
        self.counts: Counter[int] = Counter()
        self.reconnects = 0
        self._lock = threading.Lock()
        self._lost = threading.Event()
        self._closed = threading.Event()
        self._conn: stomp.Connection12 | None = None
        self._connect(deadline=60.0)
        self._thread = threading.Thread(target=self._supervise, name="auditor", daemon=True)
        self._thread.start()

    def _connect(self, deadline: float) -> None:
        end = time.monotonic() + deadline
        while not self._closed.is_set():
            options: dict[str, Any] = {"vhost": self.vhost} if self.vhost else {}
            conn = stomp.Connection12(
                [("127.0.0.1", self.port)], reconnect_attempts_max=1, **options
            )
            conn.set_listener("auditor", self)
            try:
                if self.login is not None:
                    conn.connect(*self.login, wait=True)
                else:
                    conn.connect(wait=True)
                self._conn = conn  # before subscribing: the first messages are acked on it
                conn.subscribe(
                    self.queue,
                    id="audit",
                    ack="client-individual",
                    headers=self.headers,
                )
                self._lost.clear()
                return
            except Exception:
                _quiet_disconnect(conn)
                if time.monotonic() > end:
                    raise
                time.sleep(RECONNECT_PAUSE)

    def _supervise(self) -> None:
        # stomp.py does not reconnect by itself, and must not be made to from its own
        # receiver thread: reconnecting happens here.
        while not self._closed.is_set():
            if self._lost.wait(0.2) and not self._closed.is_set():
                old, self._conn = self._conn, None
                if old is not None:
                    _quiet_disconnect(old)
                time.sleep(RECONNECT_PAUSE)
                try:
                    self._connect(deadline=300.0)
                    self.reconnects += 1
                except Exception as exc:
                    logger.warning("auditor could not reconnect: %s", exc)

    def on_message(self, frame: Any) -> None:
        event_id = int(frame.headers["event-id"])
        with self._lock:
            self.counts[event_id] += 1
            conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # unacknowledged: it comes again
                conn.ack(frame.headers["ack"])

    def on_disconnected(self) -> None:
        self._lost.set()

    def ids(self) -> set[int]:
        with self._lock:
            return set(self.counts)

    def duplicates(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self.counts.values())

    def close(self) -> None:
        self._closed.set()
        self._thread.join(10)
        if self._conn is not None:
            _quiet_disconnect(self._conn)
            self._conn = None


def _quiet_disconnect(conn: stomp.Connection12) -> None:
    with contextlib.suppress(Exception):
        if conn.is_connected():
            conn.disconnect()
        else:
            conn.transport.stop()
