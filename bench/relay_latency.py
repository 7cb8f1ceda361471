"""Commit-to-broker latency for isolated changes, through the doorbell.

With the relay idle (doorbell armed), commits one single-row INSERT at a time, spaced
apart, and measures from the return of COMMIT to the message's arrival at a consumer of
the VirtualTopic's queue (an upper bound of commit-to-broker).

    .venv/bin/python bench/relay_latency.py [--samples 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

import psycopg
from relay_common import Consumer, Env, add_service_args, environment, relay


def measure(env: Env, samples: int) -> list[str]:
    topic = f"/topic/VirtualTopic.lat{uuid.uuid4().hex[:8]}"
    consumer = Consumer(env.stomp_port, topic)
    latencies: list[float] = []
    with (
        psycopg.connect(env.db_url, autocommit=True) as conn,
        relay(env, destination=topic),
    ):
        seq = conn.execute("SELECT pg_get_serial_sequence('cdc.change', 'id')").fetchone()
        assert seq is not None
        wait_armed(conn)
        for i in range(samples):
            with conn.transaction():
                conn.execute("INSERT INTO service (name) VALUES (%s)", [f"lat-{uuid.uuid4()}"])
                row = conn.execute("SELECT currval(%s)", [seq[0]]).fetchone()
            committed = time.monotonic()
            assert row is not None
            event_id = int(row[0])
            end = committed + 5.0
            while event_id not in consumer.arrived and time.monotonic() < end:
                time.sleep(0.0005)
            if event_id not in consumer.arrived:
                raise SystemExit(f"sample {i}: change {event_id} not delivered within 5 s")
            latencies.append((consumer.arrived[event_id] - committed) * 1000)
            wait_armed(conn)
            time.sleep(random.uniform(0.05, 0.15))
    consumer.close()
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return [
        f"commit-to-broker latency, isolated changes ({samples} samples): "
        f"p50 {p50:.1f} ms, p90 {latencies[int(len(latencies) * 0.9)]:.1f} ms, "
        f"p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms"
    ]


def wait_armed(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        row = conn.execute("SELECT armed FROM cdc.doorbell").fetchone()
        if row and row[0]:
            return
        time.sleep(0.005)
    raise SystemExit("the relay did not go idle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    add_service_args(parser)
    args = parser.parse_args()
    with environment(args.reuse) as env:
        for line in measure(env, args.samples):
            print(line, flush=True)


if __name__ == "__main__":
    main()
