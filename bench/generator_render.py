#!/usr/bin/env python3
"""Benchmark one generator pass: read + validate + render + write, for N hosts.

Starts its own PostgreSQL (fsync on) with scripts/services.py, loads N hosts with one
interface each, then measures every N in a fresh child process so its peak RSS is its
own. The real checkers (dhcpd -t, kea-dhcp4 -t) are timed separately.

    .venv/bin/python bench/generator_render.py [--hosts 1000 10000 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from generator import (
    apply,
    changes,
    metrics,
    passes,
    read,
    render,
    settings,
    syntax_check,
    validate,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import services  # noqa: E402  (scripts/services.py)

HOSTS_PER_SUBNET = 30_000

LOAD = """
SET session_replication_role = replica;  -- bulk load: skip capture triggers
INSERT INTO subnet (id, name, network, gateway, domain_name, dns_servers, pool_start, pool_end,
                    lease_time)
SELECT s, 'bench' || s, ('10.' || (100 + s) || '.0.0/16')::cidr,
       ('10.' || (100 + s) || '.0.1')::inet,
       'bench' || s || '.example.org', ARRAY[('10.' || (100 + s) || '.0.2')::inet],
       ('10.' || (100 + s) || '.255.1')::inet, ('10.' || (100 + s) || '.255.200')::inet, 3600
FROM generate_series(1, :subnets) AS s;
INSERT INTO host (id, hostname, description)
SELECT i, 'host' || i, 'benchmark host ' || i FROM generate_series(1, :hosts) AS i;
INSERT INTO interface (host_id, name, mac, ip)
SELECT i, 'eth0',
       ('02:00:' || lpad(to_hex((i >> 24) & 255), 2, '0')
        || ':' || lpad(to_hex((i >> 16) & 255), 2, '0')
        || ':' || lpad(to_hex((i >> 8) & 255), 2, '0')
        || ':' || lpad(to_hex(i & 255), 2, '0'))::macaddr,
       ('10.' || (101 + (i - 1) / 30000) || '.' || (1 + ((i - 1) % 30000) / 240) || '.'
        || (10 + (i - 1) % 240))::inet
FROM generate_series(1, :hosts) AS i;
SET session_replication_role = origin;
"""


def migrate(url: str) -> None:
    services.migrate(url)


def parent(args: argparse.Namespace) -> int:

    state = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    cluster = services.PostgresCluster(state / "pg", fsync=True)
    cluster.start()
    rows = []
    try:
        for hosts in args.hosts:
            name = f"bench_{hosts}"
            with psycopg.connect(cluster.url(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            url = cluster.url(name)
            migrate(url)
            subnets = max(1, -(-hosts // HOSTS_PER_SUBNET))
            started = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                sql = LOAD.replace(":subnets", str(subnets)).replace(":hosts", str(hosts))
                conn.execute(sql.encode())
                # What autovacuum would otherwise do to the fresh rows while the passes
                # run (hint bits, visibility map, freezing): a steady-state database.
                conn.execute("VACUUM (FREEZE, ANALYZE)")
            print(f"loaded {hosts} hosts in {time.monotonic() - started:.1f} s", file=sys.stderr)
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    url,
                    "--repeat",
                    str(args.repeat),
                    "--hosts",
                    str(hosts),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(child.stdout)
            steady = subprocess.run(
                [sys.executable, __file__, "--child-daemon", url, "--repeat", str(args.repeat)],
                capture_output=True,
                text=True,
                check=True,
            )
            row.update(json.loads(steady.stdout))
            rows.append(row)
    finally:
        cluster.destroy()
        shutil.rmtree(state, ignore_errors=True)
    print(
        "| hosts | read | validate | render | write | total (median) | total (first) "
        "| peak RSS | dhcpd -t | kea-dhcp4 -t | daemon pass, one change | daemon peak RSS |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['hosts']:,} | {r['read']:.0f} ms | {r['validate']:.0f} ms | {r['render']:.0f} ms"
            f" | {r['write']:.0f} ms | **{r['total']:.0f} ms** | {r['first']:.0f} ms"
            f" | {r['rss_mb']:.0f} MB | {r['dhcpd']:.0f} ms | {r['kea']:.0f} ms"
            f" | **{r['steady']:.0f} ms** | {r['daemon_rss_mb']:.0f} MB |"
        )
    return 0


def child(url: str, *, hosts: int, repeat: int) -> int:
    engine = read.make_engine(url)
    out_dir = Path(tempfile.mkdtemp(prefix="bench-out-"))
    samples: dict[str, list[float]] = {
        k: [] for k in ("read", "validate", "render", "write", "total")
    }
    texts: dict[str, str] = {}
    for _ in range(repeat + 1):
        inventory = checked = text = None  # type: ignore[assignment]  # free the last pass
        with read.collector_paused():  # as passes.prepare runs a pass
            t0 = time.perf_counter()
            inventory = read.read_inventory(engine)
            t1 = time.perf_counter()
            checked = validate.check(inventory)
            t2 = time.perf_counter()
            text = render.render(checked.inventory, fmt="isc")
            t3 = time.perf_counter()
        target = out_dir / "dhcpd.conf"
        target.unlink(missing_ok=True)
        config = settings.ApplySettings(fmt="isc", output=target, syntax_check=False)
        outcome = apply.apply(text, config=config)
        t4 = time.perf_counter()
        assert outcome.changed and outcome.reservations == hosts, outcome
        for key, value in zip(
            ("read", "validate", "render", "write", "total"),
            (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0),
            strict=True,
        ):
            samples[key].append(value * 1000)
    texts["isc"] = text
    # peak RSS of the ISC passes (the Kea render below holds a JSON tree on top)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    texts["kea"] = render.render(checked.inventory, fmt="kea")
    checks = {}
    for fmt in ("isc", "kea"):
        path = out_dir / f"check.{fmt}"
        path.write_text(texts[fmt])
        started = time.perf_counter()
        result = syntax_check.check(path, fmt=fmt)  # type: ignore[arg-type]
        checks[fmt] = float("nan") if result.skipped else (time.perf_counter() - started) * 1000
    first = samples["total"][0]
    result_row = {k: statistics.median(v[1:]) for k, v in samples.items()}
    result_row.update(
        hosts=hosts,
        first=first,
        rss_mb=rss_mb,
        dhcpd=checks["isc"],
        kea=checks["kea"],
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(result_row))
    return 0


MOVE_ONE = """
UPDATE interface SET ip = CASE WHEN ip = %(a)s::inet THEN %(b)s::inet ELSE %(a)s::inet END
WHERE id = (SELECT min(id) FROM interface)
"""


def daemon_child(url: str, *, repeat: int) -> int:
    """In a process of its own, so its peak RSS is the daemon's alone."""
    out_dir = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    times = daemon_passes(read.make_engine(url), url, out_dir / "dhcpd.conf", repeat=repeat)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps({"steady": statistics.median(times), "daemon_rss_mb": rss_mb}))
    return 0


def daemon_passes(engine: Any, url: str, target: Path, *, repeat: int) -> list[float]:
    """What the daemon pays per isolated change: an incremental pass (re-read of the
    named interface, state update, whole-file write with the incremental dhcpd check)
    after one interface moved (ms)."""
    config = settings.ApplySettings(fmt="isc", output=target, syntax_check=True)
    pipeline = passes.Pipeline(engine, config=config, metrics=metrics.Metrics())
    assert pipeline.full() is not None  # the start: a full pass and a whole-file check
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT id, host(ip) FROM interface ORDER BY id LIMIT 1").fetchone()
        assert row is not None
        moved, first_ip = row
        spare = str(ipaddress.IPv4Address(first_ip) + 250)  # free: hosts start at .10
        times = []
        for _ in range(repeat * 3):
            conn.execute(MOVE_ONE, {"a": first_ip, "b": spare})
            started = time.perf_counter()
            visibility = pipeline.incremental(changes.Plan(interface_ids={moved}))
            assert visibility is not None
            times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", metavar="DATABASE_URL")
    parser.add_argument("--child-daemon", metavar="DATABASE_URL")
    args = parser.parse_args()
    if args.child_daemon:
        return daemon_child(args.child_daemon, repeat=args.repeat)
    if args.child:
        return child(args.child, hosts=args.hosts[0], repeat=args.repeat)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
