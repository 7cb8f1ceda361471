"""Helpers for the relay tests: the relay as a subprocess, a STOMP consumer that
survives broker restarts, concurrent writers that survive PostgreSQL restarts, a record
of every outbox id written, a TCP proxy to the broker that cuts the connection before a
receipt or goes silent, a server that never answers, and the relay's metrics."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import services
import stomp
from prometheus_client.parser import text_string_to_metric_families

from tests import waiting

ROOT = Path(__file__).resolve().parents[2]
RELAY = [sys.executable, "-m", "cdc.cli"]

# Every outbox id ever written, kept by a trigger in the writer's own transaction, so the
# record holds exactly the committed changes whatever happens to connections.
RECORD_SQL = """
CREATE TABLE IF NOT EXISTS relay_test_written (id bigint PRIMARY KEY);
CREATE OR REPLACE FUNCTION relay_test_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.relay_test_written (id) SELECT id FROM new_rows;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS relay_test_record ON cdc.change;
CREATE TRIGGER relay_test_record AFTER INSERT ON cdc.change
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION relay_test_record();
"""


wait_until = waiting.wait_for


def record_written(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(RECORD_SQL)


def written_ids(db_url: str) -> set[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM relay_test_written")}


def outbox_count(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM cdc.change").fetchone()
    assert row is not None
    return int(row[0])


def consumer_queue(topic: str, name: str = "test") -> str:
    """The VirtualTopic consumer queue for ``topic`` (/topic/VirtualTopic.X)."""
    return f"/queue/Consumer.{name}.{topic.removeprefix('/topic/')}"


class Consumer(stomp.ConnectionListener):  # type: ignore[misc]
    """Counts event-ids read from a queue; reconnects on its own thread after a loss.

    Each message is acknowledged only after it is counted: with ``ack:auto`` the broker
    forgets a message once dispatched, and a broker that dies with frames still in the
    socket would take them along, which would look like a loss in the relay.
    """

    def __init__(self, port: int, queue: str) -> None:
        self.port = port
        self.queue = queue
        self.counts: Counter[int] = Counter()
        self.bodies: dict[int, bytes] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.arrived: dict[int, float] = {}
        self.order: list[int] = []  # event-ids as they arrived, duplicates included
        self._lock = threading.Lock()
        self._lost = threading.Event()
        self._closed = threading.Event()
        self._conn: stomp.Connection12 | None = None
        self._connect(deadline=60.0)
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _connect(self, deadline: float) -> None:
        end = time.monotonic() + deadline
        while True:
            conn = stomp.Connection12([("127.0.0.1", self.port)], reconnect_attempts_max=1)
            conn.set_listener("consumer", self)
            try:
                conn.connect(wait=True)
                self._conn = conn  # before subscribing: the first messages are acked with it
                conn.subscribe(
                    self.queue,
                    id="1",
                    ack="client-individual",
                    headers={"activemq.prefetchSize": "2000"},
                )
                self._lost.clear()
                return
            except Exception:
                with contextlib.suppress(Exception):
                    conn.disconnect()
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)

    def _supervise(self) -> None:
        while not self._closed.is_set():
            if self._lost.wait(0.2) and not self._closed.is_set():
                time.sleep(0.5)
                with contextlib.suppress(Exception):
                    self._connect(deadline=120.0)

    def on_message(self, frame: Any) -> None:
        event_id = int(frame.headers["event-id"])
        with self._lock:
            self.counts[event_id] += 1
            self.bodies[event_id] = frame.body
            self.headers[event_id] = dict(frame.headers)
            self.arrived.setdefault(event_id, time.monotonic())
            self.order.append(event_id)
            conn = self._conn
        if conn is not None:
            # Unacknowledged after a lost connection: the broker redelivers it, counted again.
            with contextlib.suppress(Exception):
                conn.ack(frame.headers["ack"])

    def on_disconnected(self) -> None:
        self._lost.set()

    def ids(self) -> set[int]:
        with self._lock:
            return set(self.counts)

    def duplicates(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self.counts.values())

    def received(self) -> int:
        """Messages received, duplicates included."""
        with self._lock:
            return sum(self.counts.values())

    def close(self) -> None:
        self._closed.set()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.disconnect()


@contextlib.contextmanager
def consumer(port: int, topic: str, name: str | None = None) -> Iterator[Consumer]:
    """A consumer of its own VirtualTopic queue (a fresh name unless one is given)."""
    instance = Consumer(port, consumer_queue(topic, name or f"t{uuid.uuid4().hex[:6]}"))
    try:
        yield instance
    finally:
        instance.close()


class RelayProcess:
    """``cdc-relay`` as a real subprocess, its log in a file."""

    def __init__(
        self,
        *,
        db_url: str,
        stomp_url: str,
        destination: str,
        log: Path,
        extra: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        env = dict(os.environ)
        env.update(DATABASE_URL=db_url, STOMP_URL=stomp_url, CDC_DESTINATION=destination)
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *(prefix or []),
                    *RELAY,
                    "--log-level",
                    "DEBUG",
                    "--fallback-interval",
                    "5",
                    *(extra or []),
                ],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def leader_pid(db_url: str) -> int | None:
    """The OS pid of the relay holding the leader lock (from its application_name)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s",
            [0x63646372],
        ).fetchone()
    if row is None:
        return None
    return int(str(row[0]).rsplit(" ", 1)[1])


class Writers:
    """``threads`` concurrent writers, each inserting ``per_thread`` services, one row per
    transaction; reconnects and retries through PostgreSQL restarts."""

    def __init__(self, db_url: str, *, threads: int = 4, per_thread: int = 1250) -> None:
        self.db_url = db_url
        self.per_thread = per_thread
        self.done = [0] * threads
        self.errors: list[BaseException] = []
        self.tag = uuid.uuid4().hex[:6]
        self._threads = [
            threading.Thread(target=self._write, args=(i,), daemon=True) for i in range(threads)
        ]

    def start(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def total(self) -> int:
        return sum(self.done)

    def join(self, timeout: float = 180.0) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "writers did not finish"
        assert not self.errors, self.errors

    def _write(self, index: int) -> None:
        conn: psycopg.Connection[Any] | None = None
        n = 0
        give_up = time.monotonic() + 170.0
        while n < self.per_thread:
            try:
                if conn is None:
                    conn = psycopg.connect(self.db_url, autocommit=True, connect_timeout=5)
                conn.execute("INSERT INTO service (name) VALUES (%s)", [f"{self.tag}-w{index}-{n}"])
                n += 1
                self.done[index] = n
            except psycopg.errors.UniqueViolation:
                n += 1  # the commit went through before the connection broke
                self.done[index] = n
            except psycopg.OperationalError:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                if time.monotonic() > give_up:
                    self.errors.append(TimeoutError("writer gave up"))
                    return
                time.sleep(0.2)
            except BaseException as exc:
                self.errors.append(exc)
                return
        if conn is not None:
            conn.close()


class BrokerProxy:
    """A TCP proxy to the broker. ``cut_next_receipt`` set: it closes both sides instead
    of passing on the next RECEIPT frame for a batch (later connections pass everything).
    ``frozen`` set: it stops passing bytes either way while keeping every connection open
    (new ones too), like a broker that hangs; cleared, it passes on what waited."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cuts = 0
        self.cut_next_receipt = threading.Event()
        self.frozen = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"stomp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while not self._closed:
                if self.frozen.is_set():
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select([client, upstream], [], [], 0.1)
                if self.frozen.is_set():
                    continue
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        if self.cut_next_receipt.is_set() and b"RECEIPT\nreceipt-id:batch-" in data:
                            self.cut_next_receipt.clear()
                            self.cuts += 1
                            return  # cut: the relay never sees the receipt
                        client.sendall(data)
                    else:
                        upstream.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.frozen.clear()
        self._closed = True
        self._server.close()


class SilentServer:
    """Accepts TCP connections and never reads or writes: a server that hangs before
    answering (the STOMP CONNECT, PostgreSQL's start-up, a TLS handshake)."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._held.append(client)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(5)
        for sock in self._held:
            sock.close()


def metrics(port: int) -> dict[str, float]:
    """The relay's Prometheus samples, keyed like the text format: ``name`` or
    ``name{label="value",...}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def metrics_or_empty(port: int) -> dict[str, float]:
    """``metrics``, or nothing while the endpoint does not answer yet."""
    try:
        return metrics(port)
    except OSError:
        return {}


def free_port() -> int:
    """A port to listen on: ``services.free_port`` (outside the ephemeral range)."""
    return services.free_port()


def run_cli(
    args: list[str], *, db_url: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STOMP_URL", "CDC_DESTINATION")}
    env["DATABASE_URL"] = db_url
    return subprocess.run(
        [*RELAY, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


class Forwarder:
    """A plain TCP forwarder from ``listen_host`` (e.g. a veth address) to a local port."""

    def __init__(self, listen_host: str, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server((listen_host, 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(5)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class NetNamespace:
    """A network namespace joined to this one by a veth pair; ``cut()`` takes the link
    down, so connections through it go silent without a FIN or RST (half-open)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"cdcr{tag}"
        self.outer, self.inner = f"cr{tag}a", f"cr{tag}b"
        octet = int(tag[:2], 16) % 250 + 1
        self.host_ip, self.ns_ip = f"10.251.{octet}.1", f"10.251.{octet}.2"
        self._run("ip", "netns", "add", self.name)
        self._run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        self._run("ip", "link", "set", self.inner, "netns", self.name)
        self._run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.outer)
        self._run("ip", "link", "set", self.outer, "up")
        self._in("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.inner)
        self._in("ip", "link", "set", self.inner, "up")
        self._in("ip", "link", "set", "lo", "up")

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        self._in("ip", "link", "set", self.inner, "down")

    def restore(self) -> None:
        self._in("ip", "link", "set", self.inner, "up")

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def _in(self, *cmd: str) -> None:
        self._run(*self.prefix, *cmd)

    @staticmethod
    def _run(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)
