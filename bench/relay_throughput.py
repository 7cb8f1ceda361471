"""Relay throughput: confirmed persistent events per second into ActiveMQ.

Fills the outbox with N changes while no relay runs, starts the relay and times how fast
the outbox empties (a row leaves only after the broker's receipt for its transaction).
By default the relay publishes to a VirtualTopic with one consumer queue that a consumer
in this process drains, as a DHCP generator would: every message is stored in KahaDB and
delivered, as in production.

    .venv/bin/python bench/relay_throughput.py [--changes 50000] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import psycopg
from relay_common import Consumer, Env, add_service_args, count, environment, relay


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    env: Env, changes: int, batch_sizes: list[int], *, rounds: int = 1, no_consumer: bool = False
) -> list[str]:
    topic = (
        "/topic/VirtualTopic.machinedb.changes"
        if no_consumer
        else f"/topic/VirtualTopic.bench{uuid.uuid4().hex[:8]}"
    )
    lines = []
    consumer = None if no_consumer else Consumer(env.stomp_port, topic)
    with psycopg.connect(env.db_url, autocommit=True) as conn:
        for _ in range(rounds):
            for batch_size in batch_sizes:
                conn.execute("DELETE FROM cdc.change")
                conn.execute(
                    "INSERT INTO service (name) SELECT 'bench-' || gen_random_uuid() "
                    "FROM generate_series(1, %s)",
                    [changes],
                )
                total = count(conn, "SELECT count(*) FROM cdc.change")
                with relay(env, "--batch-size", str(batch_size), destination=topic) as proc:
                    while count(conn, "SELECT count(*) FROM cdc.change") == total:
                        time.sleep(0.005)
                    start = time.monotonic()
                    started_at = count(conn, "SELECT count(*) FROM cdc.change")
                    while count(conn, "SELECT count(*) FROM cdc.change"):
                        time.sleep(0.01)
                    elapsed = time.monotonic() - start
                    cpu = cpu_seconds(proc.pid)
                rate = started_at / elapsed
                if consumer is not None:  # start the next round with an empty queue
                    consumer.wait_for(total, deadline=300.0)
                lines.append(
                    f"relay throughput, batch {batch_size}: {started_at} changes in "
                    f"{elapsed:.2f} s = {rate:,.0f} confirmed persistent events/s "
                    f"(relay CPU {cpu / started_at * 1e6:.0f} us/event incl. start-up)"
                )
                print(lines[-1], flush=True)
    if consumer is not None:
        consumer.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1000])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--no-consumer",
        action="store_true",
        help="publish to the default destination, whose declared consumer queue stores "
        "every message but is not read during the run",
    )
    add_service_args(parser)
    args = parser.parse_args()
    with environment(args.reuse) as env:
        measure(
            env, args.changes, args.batch_size, rounds=args.rounds, no_consumer=args.no_consumer
        )


if __name__ == "__main__":
    main()
