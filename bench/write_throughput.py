"""Write throughput with change capture, side by side in one run.

4 concurrent writers, each committing single-row INSERTs as fast as it can, for the same
time against tables that differ only in what happens on write (captured tables use
cdc.track_v2, as every tracked table does after migration 0004):

  plain            no capture at all (the reference)
  captured+relay   capture triggers, relay running (the doorbell design)
  captured         capture triggers, no relay (the doorbell stays disarmed)
  naive+relay      capture triggers plus a NOTIFY in every transaction, relay running

Configurations are interleaved over several rounds so drift on a shared machine hits
all of them alike; the ratio is the median of each round's ratio to that round's plain.

    .venv/bin/python bench/write_throughput.py [--seconds 5] [--rounds 3] [--writers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
from relay_common import Env, add_service_args, environment, relay, wait_idle

SETUP = """
CREATE TABLE IF NOT EXISTS bench_plain (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE IF NOT EXISTS bench_captured (LIKE bench_plain INCLUDING ALL);
CREATE TABLE IF NOT EXISTS bench_naive (LIKE bench_plain INCLUDING ALL);
SELECT cdc.track_v2('bench_captured');
SELECT cdc.track_v2('bench_naive');
CREATE OR REPLACE FUNCTION bench_notify_always() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cdc_change', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_notify_always ON bench_naive;
CREATE TRIGGER bench_notify_always AFTER INSERT ON bench_naive
    FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_always();
"""

CONFIGS = [
    ("plain", "bench_plain", False),
    ("captured+relay", "bench_captured", True),
    ("captured", "bench_captured", False),
    ("naive+relay", "bench_naive", True),
]


def write_for(db_url: str, table: str, seconds: float, writers: int) -> float:
    """Commits per second from ``writers`` threads inserting one row per transaction."""
    counts = [0] * writers
    start = threading.Barrier(writers + 1)
    stop = threading.Event()

    def writer(index: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            sql = f"INSERT INTO {table} (name) VALUES (%s)"
            name = f"w{index}-{uuid.uuid4().hex[:8]}"
            start.wait()
            n = 0
            while not stop.is_set():
                conn.execute(sql, [name])
                n += 1
            counts[index] = n

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - began)


@contextlib.contextmanager
def maybe_relay(env: Env, running: bool, topic: str) -> Iterator[None]:
    if not running:
        yield
        return
    with relay(env, destination=topic), psycopg.connect(env.db_url, autocommit=True) as conn:
        wait_idle(conn)
        yield


def measure(env: Env, seconds: float, rounds: int, writers: int) -> list[str]:
    # a VirtualTopic with no consumer queue: the broker drops the copies, so the run
    # measures the writers, not the broker's store filling up
    topic = f"/topic/VirtualTopic.write{uuid.uuid4().hex[:8]}"
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        conn.execute(SETUP)
    rates: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    for _ in range(rounds):
        for name, table, with_relay in CONFIGS:
            with maybe_relay(env, with_relay, topic):
                rates[name].append(write_for(env.db_url, table, seconds, writers))
    # ratios pair each configuration with the plain run of the same round (drift cancels)
    lines = [
        f"write throughput, {writers} writers, single-row INSERT, {rounds} rounds x "
        f"{seconds:.0f} s, median rate and median per-round ratio to plain:"
    ]
    for name, _, _ in CONFIGS:
        rate = statistics.median(rates[name])
        ratio = statistics.median(r / p for r, p in zip(rates[name], rates["plain"], strict=True))
        each = ", ".join(f"{r:,.0f}" for r in rates[name])
        lines.append(f"  {name:15} {rate:8,.0f} commits/s  ratio {ratio:.2f}  ({each})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4)
    add_service_args(parser)
    args = parser.parse_args()
    with environment(args.reuse) as env:
        for line in measure(env, args.seconds, args.rounds, args.writers):
            print(line, flush=True)


if __name__ == "__main__":
    main()
