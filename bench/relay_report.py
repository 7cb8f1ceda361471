"""All relay figures side by side in one run, on fresh services (PostgreSQL with fsync on,
ActiveMQ with its KahaDB store): throughput, isolated-change latency, write throughput.

    .venv/bin/python bench/relay_report.py
"""

from __future__ import annotations

import argparse
import os
import platform

import relay_latency
import relay_throughput
import write_throughput
from relay_common import add_service_args, environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5)
    add_service_args(parser)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}", flush=True)
    with environment(args.reuse) as env:
        lines = relay_throughput.measure(env, args.changes, [100, 1000], rounds=2)
        lines += relay_latency.measure(env, args.samples)
        print(lines[-1], flush=True)
        lines += write_throughput.measure(env, args.seconds, args.rounds, 4)
    print("\n".join(lines[-5:]), flush=True)


if __name__ == "__main__":
    main()
