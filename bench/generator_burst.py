#!/usr/bin/env python3
"""Benchmark coalescing: how many renders does a burst of 10,000 changes cause?

Starts its own PostgreSQL (fsync on) and ActiveMQ with scripts/services.py, runs the
real ``cdc-relay`` and ``dhcp-generator`` as subprocesses, commits the burst in plain
SQL (100 transactions of 50 hosts + 50 interfaces each), and reads the generator's
metrics until every change message was acknowledged.

    .venv/bin/python bench/generator_burst.py [--changes 10000] [--prefetch 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import services  # noqa: E402  (scripts/services.py)

BIN = ROOT / ".venv" / "bin"
DEADLINE = 300.0  # seconds
ROWS_PER_TX = 100  # change rows per transaction (one host and one interface per pair)
SEED = """
INSERT INTO subnet (id, name, network, gateway, pool_start, pool_end)
VALUES (1, 'burst', '10.50.0.0/16', '10.50.0.1', '10.50.255.1', '10.50.255.200');
INSERT INTO host (id, hostname) SELECT i, 'seed' || i FROM generate_series(1, 100) AS i;
INSERT INTO interface (host_id, mac, ip)
SELECT i, ('02:01:00:00:00:' || lpad(to_hex(i), 2, '0'))::macaddr, ('10.50.0.' || (10 + i))::inet
FROM generate_series(1, 100) AS i;
"""


def migrate(url: str) -> None:
    services.migrate(url)


def metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def renders(sample: dict[str, float]) -> float:
    return sum(v for k, v in sample.items() if k.startswith("dhcp_generator_renders_total{"))


def wait(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def burst(url: str, changes: int, spread: float) -> float:
    pairs = changes // 2
    pause = spread / max(1, pairs // (ROWS_PER_TX // 2))
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, pairs, ROWS_PER_TX // 2):
            last = min(pairs, first + ROWS_PER_TX // 2)
            with conn.transaction():
                conn.execute(
                    "INSERT INTO host (id, hostname) SELECT 1000 + i, 'burst' || i"
                    " FROM generate_series(%s::int, %s::int) AS i",
                    [first, last - 1],
                )
                conn.execute(
                    "INSERT INTO interface (host_id, mac, ip) SELECT 1000 + i,"
                    " ('02:02:00:00:' || lpad(to_hex(i / 256), 2, '0') || ':'"
                    "  || lpad(to_hex(i %% 256), 2, '0'))::macaddr,"
                    " ('10.50.' || (1 + i / 200) || '.' || (10 + i %% 200))::inet"
                    " FROM generate_series(%s::int, %s::int) AS i",
                    [first, last - 1],
                )
            time.sleep(pause)  # pacing the burst, not synchronisation
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--spread", type=float, default=0.0, help="seconds to spread it over")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    pg = services.PostgresCluster(state / "pg", fsync=True)
    mq = services.ActiveMQBroker(state / "activemq")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        mq.start()
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE machinedb")
        url = pg.url("machinedb")
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SEED.encode())
        out = state / "dhcpd.conf"
        port = services.free_port()
        env = {**os.environ, "DATABASE_URL": url, "STOMP_URL": mq.url}
        with open(state / "generator.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dhcp-generator"),
                        "--output",
                        str(out),
                        "--metrics-port",
                        str(port),
                        "--prefetch",
                        str(args.prefetch),
                        "--window",
                        str(args.window),
                        "--reload-command",
                        "true",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        wait(out.exists, "the first render")
        with open(state / "relay.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "cdc-relay")], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        before = renders(metrics(port))
        started = time.monotonic()
        committed = burst(url, args.changes, args.spread)

        def done() -> bool:
            sample = metrics(port)
            return (
                sample.get('dhcp_generator_messages_total{kind="relevant"}', 0) >= args.changes
                and sample.get("dhcp_generator_pending_messages", 1) == 0
            )

        wait(done, "every change to be acknowledged")
        converged = time.monotonic() - started
        sample = metrics(port)
        count = renders(sample) - before
        print("| changes | prefetch | window | commit time | all acknowledged after | renders |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {args.changes:,} | {args.prefetch} | {args.window:g} s | {committed:.1f} s"
            f" | {converged:.1f} s | **{count:.0f}** |"
        )
        by_result = {
            k.split('"')[1]: int(v)
            for k, v in sample.items()
            if k.startswith("dhcp_generator_renders_total{")
        }
        print(f"renders by result (including the start-up render): {by_result}", file=sys.stderr)
        diff = subprocess.run(
            [str(BIN / "dhcp-generator"), "--dry-run", "--output", str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(f"final config equals a fresh render: {'yes' if not diff else 'NO'}", file=sys.stderr)
        if diff:
            return 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        mq.destroy()
        pg.destroy()
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
