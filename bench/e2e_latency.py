#!/usr/bin/env python3
"""Commit-to-applied latency, end to end, against the cron job it replaces.

Starts its own PostgreSQL (fsync on) and ActiveMQ, loads a 10,000-host inventory, runs
the installed ``cdc-relay`` and ``dhcp-generator`` commands and a real ISC dhcpd in a
network namespace (the end-to-end harness, tests/e2e/netns.py; needs root), then makes
isolated changes one at a time (each an UPDATE of one interface's address, committed
with nothing else in flight) and measures for each, from just before COMMIT:

* file: the new dhcpd.conf is in place (a 1 ms stat loop on the file, then its content
  is checked to hold the new address);
* reloaded: dhcpd runs with it (the reload command, tests/e2e/reload_dhcpd.sh, appends a
  timestamp once the new dhcpd serves).

The cron job is modelled, not run for hours: a job every N seconds with a uniformly random
phase picks up a change after (phase - commit) mod N, then needs one full
``dhcp-generator --once`` run (measured here on the same inventory) and one reload
(the event-driven run's measured reload times). Each real commit time is combined with
many random phases.

    .venv/bin/python bench/e2e_latency.py [--hosts 10000] [--changes 200]
                                          [--plot docs/e2e_latency.png] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import services  # noqa: E402  (scripts/services.py)

from tests.e2e import configs, netns, pipeline  # noqa: E402

CRON_PERIODS = (60, 300)  # seconds, the usual "every minute" and "every five minutes"
CRON_PHASES = 500  # random cron phases per real change in the model
ONCE_RUNS = 5  # measured `dhcp-generator --once` runs for the cron model
POLL = 0.001  # seconds: the stat loop on the output file
CHANGE_DEADLINE = 60.0  # seconds for one change to reach the file and dhcpd
SETTLE = 2.0  # seconds the file must stay unchanged before the first measured change
SPARE_BASE = 0x8000  # host numbers from here on hold moved addresses
POOL = (0xFF00, 0xFFC8)  # host numbers of the dynamic pool in the /16

LOAD = [
    "SET session_replication_role = replica",  # bulk load: skip the capture triggers
    "INSERT INTO subnet (id, name, network, gateway, pool_start, pool_end, lease_time)"
    " VALUES (1, 'bench', %(network)s, %(gateway)s, %(pool_start)s, %(pool_end)s, 3600)",
    "INSERT INTO host (id, hostname) SELECT i, 'host' || i FROM generate_series(1, %(hosts)s) i",
    """INSERT INTO interface (id, host_id, name, mac, ip)
    SELECT i, i, 'eth0',
           ('02:00:' || lpad(to_hex((i >> 24) & 255), 2, '0') || ':'
            || lpad(to_hex((i >> 16) & 255), 2, '0') || ':'
            || lpad(to_hex((i >> 8) & 255), 2, '0') || ':'
            || lpad(to_hex(i & 255), 2, '0'))::macaddr,
           %(base)s::inet + (255 + i)
    FROM generate_series(1, %(hosts)s) AS i""",
    "SELECT setval(pg_get_serial_sequence('host', 'id'), %(hosts)s)",
    "SELECT setval(pg_get_serial_sequence('interface', 'id'), %(hosts)s)",
    "SET session_replication_role = origin",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }


@contextmanager
def services_up(state: Path) -> Iterator[tuple[str, str]]:
    """A PostgreSQL (fsync on) with a migrated 'machinedb', and an ActiveMQ."""
    cluster = services.PostgresCluster(state / "pg")
    broker = services.ActiveMQBroker(state / "activemq")
    try:
        cluster.start()
        broker.start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE machinedb")
        url = cluster.url("machinedb")
        services.migrate(url)
        yield url, broker.url
    finally:
        broker.destroy()
        cluster.destroy()


def load(url: str, net: netns.Link, hosts: int) -> None:
    params = {
        "network": str(net.network),
        "gateway": str(net.server_ip),
        "pool_start": str(net.host(POOL[0])),
        "pool_end": str(net.host(POOL[1])),
        "hosts": hosts,
        "base": str(net.network.network_address),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LOAD:
            conn.execute(statement, {k: v for k, v in params.items() if f"%({k})s" in statement})


def wait_settled(path: Path, hosts: int, server: netns.IscServer) -> None:
    """The generator's first render of all hosts is in place, dhcpd runs it, all quiet."""

    def rendered() -> bool:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return False
        return text.count("\nhost ") + text.startswith("host ") >= hosts and server.running()

    netns.wait_until(rendered, 300, f"the first render of {hosts} hosts")
    last = path.stat().st_mtime_ns
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < SETTLE:
        time.sleep(0.05)
        now = path.stat().st_mtime_ns
        if now != last:
            last, quiet_since = now, time.monotonic()


def stamp_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def file_identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def measure_changes(
    url: str,
    net: netns.Link,
    output: Path,
    stamp: Path,
    *,
    hosts: int,
    changes: int,
    gap: tuple[float, float],
    rng: random.Random,
) -> list[dict[str, float]]:
    results: list[dict[str, float]] = []
    next_spare = SPARE_BASE
    with psycopg.connect(url) as conn:
        for k in range(changes):
            interface = rng.randint(1, hosts)
            new_ip = str(net.host(next_spare))
            next_spare += 1
            before_file = file_identity(output)
            before_stamps = len(stamp_lines(stamp))
            conn.execute("UPDATE interface SET ip = %s WHERE id = %s", [new_ip, interface])
            t_commit = time.time()
            conn.commit()
            t_committed = time.time()
            # 1. the file: a 1 ms stat loop, then the content must hold the change
            end = time.monotonic() + CHANGE_DEADLINE
            needle = f"fixed-address {new_ip};"
            while True:
                identity = file_identity(output)
                if identity != before_file:
                    t_file = time.time()
                    if needle in output.read_text():
                        break
                    before_file = identity  # another render: keep watching
                if time.monotonic() > end:
                    raise RuntimeError(f"change {k}: {new_ip} not in {output} in time")
                time.sleep(POLL)
            # 2. dhcpd reloaded: the reload command's stamp line
            while len(lines := stamp_lines(stamp)) <= before_stamps:
                if time.monotonic() > end:
                    raise RuntimeError(f"change {k}: no reload stamp in time")
                time.sleep(POLL)
            t_reload, rc = lines[-1].split()
            if rc != "0":
                raise RuntimeError(f"change {k}: the reload command failed ({rc})")
            results.append(
                {
                    "commit": t_commit,
                    "commit_duration": t_committed - t_commit,
                    "file": t_file - t_commit,
                    "reloaded": float(t_reload) - t_commit,
                }
            )
            if (k + 1) % 20 == 0:
                print(f"  {k + 1}/{changes} changes", file=sys.stderr)
            # Isolated: the next change comes after the generator's coalescing window.
            time.sleep(rng.uniform(*gap))
    return results


def measure_once(
    url: str, stomp: str, net: netns.Link, output: Path, runs: int, rng: random.Random
) -> list[float]:
    """What one cron run costs: a full `dhcp-generator --once` that writes a changed file
    (process start, DB read, render, dhcpd -t, atomic write; no reload)."""
    durations = []
    env = {**os.environ, "DATABASE_URL": url, "STOMP_URL": stomp}
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(runs):
            new_ip = str(net.host(SPARE_BASE + 0x4000 + i))
            conn.execute("UPDATE interface SET ip = %s WHERE id = %s", [new_ip, rng.randint(1, 99)])
            argv = [pipeline.command("dhcp-generator"), "--once", "--format", "isc"]
            argv += ["--output", str(output)]
            started = time.monotonic()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            durations.append(time.monotonic() - started)
            if f"fixed-address {new_ip};" not in output.read_text():
                raise RuntimeError("--once did not write the change")
    return durations


def scrape(port: int, name: str) -> tuple[float, float]:
    """A histogram's (sum, count) from the generator's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(f"{name}{suffix} "):
                values[suffix] = float(line.split()[1])
    return values["_sum"], values["_count"]


def time_syntax_check(conf: Path, runs: int = 3) -> list[float]:
    """`dhcpd -t` on the rendered file: the check the generator runs before each rename."""
    durations = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([netns.DHCPD, "-4", "-t", "-q", "-cf", str(conf)], check=True)
        durations.append(time.monotonic() - started)
    return durations


def model_cron(
    commits: list[float],
    period: float,
    once: list[float],
    reloads: list[float],
    rng: random.Random,
) -> tuple[list[float], list[float]]:
    """Latencies of a cron job every ``period`` s with random phase, for these commits."""
    to_file, to_reload = [], []
    for commit in commits:
        for _ in range(CRON_PHASES):
            phase = rng.uniform(0, period)
            wait = (phase - commit) % period
            file_latency = wait + rng.choice(once)
            to_file.append(file_latency)
            to_reload.append(file_latency + rng.choice(reloads))
    return to_file, to_reload


def plot(series: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415  (bench-only dependency)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9, 6))
    colors = {"event": "tab:blue", "cron every 60": "tab:green", "cron every 300": "tab:purple"}
    for label, values in series.items():
        color = next((c for key, c in colors.items() if label.startswith(key)), None)
        style = "--" if "reloaded" in label else "-"
        ordered = sorted(values)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, ys, style, color=color, where="post", label=f"{label} (n={len(values)})")
    ax.set_xscale("log")
    ax.set_xlabel("commit-to-applied latency (s, log scale)")
    ax.set_ylabel("share of changes applied")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument(
        "--gap",
        type=float,
        nargs=2,
        default=(1.2, 1.6),
        metavar=("MIN", "MAX"),
        help="seconds between one change applied and the next commit (uniform; default"
        " 1.2 1.6: past the generator's 1 s coalescing window, so each change is isolated)",
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "e2e_latency.png")
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--from-json", type=Path, help="do not measure: report and plot a saved --json run"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        run = json.loads(args.from_json.read_text())
    else:
        measured = measure(args)
        if measured is None:
            return 2
        run = measured
        if args.json:
            args.json.write_text(json.dumps(run))
    report(run, plot_path=args.plot, rng=random.Random(args.seed))
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any] | None:
    """Run the pipeline and measure; None if this machine cannot."""

    ok, missing = netns.available()
    if not ok or not netns.have_dhcpd() or not pipeline.have_commands():
        print(f"needs root, ip netns, dhcpd and the installed commands ({missing})")
        return None
    rng = random.Random(args.seed)
    state = Path(tempfile.mkdtemp(prefix="mdb-bench-e2e-"))
    try:
        with ExitStack() as stack:
            url, stomp = stack.enter_context(services_up(state))
            net = stack.enter_context(netns.link(prefixlen=16))
            load(url, net, args.hosts)
            output = state / "dhcpd.conf"
            output.write_text(configs.isc(net, {}))  # dhcpd's file before the generator's
            stamp = state / "reloads"
            server = stack.enter_context(netns.isc_dhcpd(net, output, state, stamp_file=stamp))
            destination = f"/topic/VirtualTopic.bench{uuid.uuid4().hex[:8]}"
            metrics_port = services.free_port()
            with ExitStack() as daemons:
                daemons.enter_context(
                    pipeline.relay(
                        database_url=url,
                        stomp_url=stomp,
                        destination=destination,
                        log=state / "relay.log",
                    )
                )
                daemons.enter_context(
                    pipeline.generator(
                        database_url=url,
                        stomp_url=stomp,
                        destination=destination,
                        consumer="bench",
                        args=[*pipeline.isc_args(server), "--metrics-port", str(metrics_port)],
                        log=state / "generator.log",
                    )
                )
                print(f"waiting for the first render of {args.hosts} hosts", file=sys.stderr)
                wait_settled(output, args.hosts, server)
                print(f"measuring {args.changes} isolated changes", file=sys.stderr)
                render_before = scrape(metrics_port, "dhcp_generator_render_seconds")
                results = measure_changes(
                    url,
                    net,
                    output,
                    stamp,
                    hosts=args.hosts,
                    changes=args.changes,
                    gap=(args.gap[0], args.gap[1]),
                    rng=rng,
                )
                render_after = scrape(metrics_port, "dhcp_generator_render_seconds")
            renders = render_after[1] - render_before[1]
            render_mean = (render_after[0] - render_before[0]) / max(renders, 1)
            check = time_syntax_check(output)
            # with the daemons stopped, so nothing else renders meanwhile
            print("measuring the cron job's full render (--once)", file=sys.stderr)
            once = measure_once(url, stomp, net, state / "cron-dhcpd.conf", ONCE_RUNS, rng)
    finally:
        shutil.rmtree(state, ignore_errors=True)

    return {
        "hosts": args.hosts,
        "machine": machine(),
        "results": results,
        "once": once,
        "renders": renders,
        "render_mean": render_mean,
        "syntax_check": check,
    }


def report(run: dict[str, Any], *, plot_path: Path, rng: random.Random) -> None:
    """Print the figures (a markdown table) and draw the distribution."""
    results, once, check = run["results"], run["once"], run["syntax_check"]
    renders, render_mean = run["renders"], run["render_mean"]
    to_file = [r["file"] for r in results]
    to_reload = [r["reloaded"] for r in results]
    reload_step = [r["reloaded"] - r["file"] for r in results]
    commits = [r["commit"] for r in results]
    table: dict[str, dict[str, float]] = {
        "event: file in place": summary(to_file),
        "event: dhcpd reloaded": summary(to_reload),
    }
    series = {"event-driven, file in place": to_file, "event-driven, dhcpd reloaded": to_reload}
    for period in CRON_PERIODS:
        cron_file, cron_reload = model_cron(commits, period, once, reload_step, rng)
        table[f"cron {period} s (modelled): file in place"] = summary(cron_file)
        table[f"cron {period} s (modelled): dhcpd reloaded"] = summary(cron_reload)
        series[f"cron every {period} s, modelled, file in place"] = cron_file
        series[f"cron every {period} s, modelled, dhcpd reloaded"] = cron_reload

    print(f"\n{run['hosts']} hosts, {len(results)} isolated changes; machine: {run['machine']}")
    print(f"--once (one cron run), {ONCE_RUNS} runs: " + ", ".join(f"{d:.3f} s" for d in once))
    print(
        f"generator renders during the run: {renders:.0f}, read+validate+render mean"
        f" {render_mean * 1e3:.0f} ms; dhcpd -t on the file: "
        + ", ".join(f"{d * 1e3:.0f} ms" for d in check)
    )
    commit_p50 = percentile([r["commit_duration"] for r in results], 0.5)
    print(f"COMMIT itself: p50 {commit_p50 * 1e3:.1f} ms (included in the latencies)")
    print("\n| path | n | mean | p50 | p95 | p99 | max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, s in table.items():
        print(
            f"| {label} | {s['n']:.0f} | {fmt(s['mean'])} | {fmt(s['p50'])} | {fmt(s['p95'])}"
            f" | {fmt(s['p99'])} | {fmt(s['max'])} |"
        )
    title = f"Commit-to-applied latency, {run['hosts']} hosts, {len(results)} isolated changes"
    plot(series, plot_path, title)
    print(f"\nplot: {plot_path}")


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def machine() -> str:
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, load {load:.1f}"
    )


if __name__ == "__main__":
    sys.exit(main())
