"""Shared plumbing for the relay benchmarks: own services (fsync on), a migrated
database, the relay as a subprocess, a consumer that timestamps arrivals."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import services  # noqa: E402


@dataclass(frozen=True)
class Env:
    db_url: str
    stomp_url: str
    stomp_port: int
    workdir: Path


def add_service_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reuse",
        nargs=2,
        metavar=("DATABASE_URL", "STOMP_URL"),
        help="use running services instead of starting fresh ones (the database must be migrated)",
    )


@contextlib.contextmanager
def environment(reuse: list[str] | None) -> Iterator[Env]:
    workdir = Path(tempfile.mkdtemp(prefix="machinedb-bench-"))
    if reuse:
        port = int(reuse[1].rsplit(":", 1)[1])
        yield Env(reuse[0], reuse[1], port, workdir)
        return
    pg = services.PostgresCluster(workdir / "pg", fsync=True)
    amq = services.ActiveMQBroker(workdir / "activemq")
    try:
        pg.start()
        amq.start()
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE machinedb")
        services.migrate(pg.url("machinedb"))
        yield Env(pg.url("machinedb"), amq.url, amq.port, workdir)
    finally:
        amq.destroy()
        pg.destroy()


@contextlib.contextmanager
def relay(
    env: Env, *args: str, destination: str | None = None, db_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    environ = dict(os.environ, DATABASE_URL=db_url or env.db_url, STOMP_URL=env.stomp_url)
    if destination:
        environ["CDC_DESTINATION"] = destination
    with open(env.workdir / "relay.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", *args],
            env=environ,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)


def count(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(str(row[0]))


def wait_idle(conn: psycopg.Connection[tuple[object, ...]], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while count(conn, "SELECT count(*) FROM cdc.change") and time.monotonic() < end:
        time.sleep(0.05)


class Consumer:
    """Reads a VirtualTopic's consumer queue (as a DHCP generator would), so the broker
    stores and delivers every message; records arrival times by event-id."""

    def __init__(self, port: int, topic: str, name: str = "bench") -> None:
        import stomp  # noqa: PLC0415

        self.arrived: dict[int, float] = {}
        self.received = 0
        self._waited = 0
        outer = self

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_message(self, frame: object) -> None:
                headers = getattr(frame, "headers", {})
                outer.arrived[int(headers["event-id"])] = time.monotonic()
                outer.received += 1

        self._conn = stomp.Connection12([("127.0.0.1", port)])
        self._conn.set_listener("bench", Listener())
        self._conn.connect(wait=True)
        queue = f"/queue/Consumer.{name}.{topic.removeprefix('/topic/')}"
        self._conn.subscribe(queue, id="1", ack="auto", headers={"activemq.prefetchSize": "5000"})

    def wait_for(self, more: int, deadline: float) -> None:
        """Wait until ``more`` messages arrived since the last call."""
        target = self._waited + more
        end = time.monotonic() + deadline
        while self.received < target and time.monotonic() < end:
            time.sleep(0.05)
        self._waited = target

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.disconnect()
