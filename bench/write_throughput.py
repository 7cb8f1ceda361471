"""Write throughput with change capture, side by side in one run.

4 concurrent writers, each committing single-row INSERTs into the machine DB's ``host``
table as fast as it can, for the same time against three copies of the migrated
database that differ only in what happens on write. Every copy keeps the table's own
rules (RFC 1123 check, case-insensitive unique name, the ``check_host_v1`` trigger):

  plain            capture removed (cdc.untrack_v2): the reference
  captured+relay   capture as migrated (track_v2), relay running (the doorbell design),
                   publishing to a VirtualTopic whose consumer queue a consumer drains
                   from a process of its own (as a DHCP generator would): the broker
                   stores and delivers every message, on the same two cores as the
                   database
  captured+relay, no queue
                   the same, but the topic has no consumer queue: the broker drops the
                   messages, as if it ran on a machine of its own
  captured         capture as migrated, no relay (the doorbell stays disarmed)
  naive+relay      capture plus a NOTIFY in every transaction, relay running (with queue)

Configurations are interleaved over several rounds so drift on a shared machine
hits all of them alike; the ratio is the median of each round's ratio to that round's
plain run.

    .venv/bin/python bench/write_throughput.py [--seconds 5] [--rounds 3] [--writers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import psycopg
from relay_common import Consumer, Env, add_service_args, count, environment, relay, wait_idle

NAIVE = """
CREATE OR REPLACE FUNCTION bench_notify_always() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cdc_change', '');
    RETURN NULL;
END $$;
CREATE TRIGGER bench_notify_always AFTER INSERT ON host
    FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_always();
"""
PLAIN = "SELECT cdc.untrack_v2('public.host')"


@dataclass(frozen=True)
class Config:
    name: str
    db_url: str
    topic: str | None  # where the relay publishes; None: no relay


def copies(env: Env, queued: str, unqueued: str) -> list[Config]:
    """The configurations, on three databases copied from the migrated one (nothing
    may be connected to it)."""
    base, _, name = env.db_url.rpartition("/")
    urls = {suffix: f"{base}/{name}_{suffix}" for suffix in ("plain", "naive")}
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        for suffix in urls:
            conn.execute(f"DROP DATABASE IF EXISTS {name}_{suffix}".encode())
            conn.execute(f"CREATE DATABASE {name}_{suffix} TEMPLATE {name}".encode())
    for suffix, sql in (("plain", PLAIN), ("naive", NAIVE)):
        with psycopg.connect(urls[suffix], autocommit=True) as conn:
            conn.execute(sql.encode())
    return [
        Config("plain", urls["plain"], None),
        Config("captured+relay", env.db_url, queued),
        Config("captured+relay, no queue", env.db_url, unqueued),
        Config("captured", env.db_url, None),
        Config("naive+relay", urls["naive"], queued),
    ]


def write_for(db_url: str, seconds: float, writers: int) -> float:
    """Commits per second from ``writers`` threads inserting one host per transaction."""
    counts = [0] * writers
    start = threading.Barrier(writers + 1)
    stop = threading.Event()

    def writer(index: int) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            prefix = f"w{index}-{uuid.uuid4().hex[:8]}-"
            start.wait()
            n = 0
            while not stop.is_set():
                conn.execute("INSERT INTO host (hostname) VALUES (%s)", [f"{prefix}{n}"])
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


class Drain:
    """A consumer draining the relay's queue in a process of its own: in the writers'
    process its frame parsing would take the GIL from them, which a generator on
    another machine does not."""

    def __init__(self, port: int, topic: str) -> None:
        context = multiprocessing.get_context("fork")  # before any writer thread exists
        self._received: Synchronized[int] = context.Value("q", 0)
        self._stop = context.Event()
        ready = context.Event()
        self._process = context.Process(
            target=_drain, args=(port, topic, self._received, ready, self._stop), daemon=True
        )
        self._process.start()
        if not ready.wait(60):
            raise RuntimeError("the draining consumer did not subscribe within 60 s")

    @property
    def received(self) -> int:
        return int(self._received.value)

    def wait_for(self, count: int, deadline: float) -> None:
        end = time.monotonic() + deadline
        while self.received < count and time.monotonic() < end:
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._process.join(30)


def _drain(port: int, topic: str, received: Synchronized[int], ready: Event, stop: Event) -> None:
    consumer = Consumer(port, topic)
    ready.set()
    while not stop.wait(0.05):
        received.value = consumer.received
    received.value = consumer.received
    consumer.close()


@contextlib.contextmanager
def maybe_relay(env: Env, config: Config) -> Iterator[None]:
    if config.topic is None:
        yield
        return
    with (
        relay(env, destination=config.topic, db_url=config.db_url),
        psycopg.connect(config.db_url, autocommit=True) as conn,
    ):
        wait_idle(conn)
        yield
        wait_idle(conn)  # published before the next configuration starts


def measure(env: Env, seconds: float, rounds: int, writers: int) -> list[str]:
    queued = f"/topic/VirtualTopic.write{uuid.uuid4().hex[:8]}"
    unqueued = f"/topic/VirtualTopic.write{uuid.uuid4().hex[:8]}"
    configs = copies(env, queued, unqueued)
    consumer = Drain(env.stomp_port, queued)  # declares and drains the consumer queue
    expected = 0
    rates: dict[str, list[float]] = {c.name: [] for c in configs}
    try:
        for _ in range(rounds):
            for config in configs:
                with psycopg.connect(config.db_url, autocommit=True) as conn:
                    backlog = count(conn, "SELECT count(*) FROM cdc.change")
                    hosts = count(conn, "SELECT count(*) FROM host")
                    with maybe_relay(env, config):  # publishes all before it ends
                        rates[config.name].append(write_for(config.db_url, seconds, writers))
                    if config.topic == queued:
                        expected += backlog + count(conn, "SELECT count(*) FROM host") - hosts
        consumer.wait_for(expected, deadline=120)
    finally:
        consumer.close()
    # ratios pair each configuration with the plain run of the same round (drift cancels)
    lines = [
        f"write throughput, {writers} writers, single-row INSERT into host, {rounds} rounds x "
        f"{seconds:.0f} s, median rate and median per-round ratio to plain "
        f"(the consumer received {consumer.received:,} of the {expected:,} changes published"
        " to its queue):"
    ]
    for config in configs:
        name = config.name
        per_round = [r / p for r, p in zip(rates[name], rates["plain"], strict=True)]
        each = ", ".join(f"{r:,.0f}" for r in rates[name])
        ratios = ", ".join(f"{r:.3f}" for r in per_round)
        lines.append(
            f"  {name:26} {statistics.median(rates[name]):8,.0f} commits/s"
            f"  ratio {statistics.median(per_round):.3f}  (rates {each}; ratios {ratios})"
        )
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
