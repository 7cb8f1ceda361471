#!/usr/bin/env python3
"""Commit-to-served latency: a change reaches a real DHCP client, OMAPI against restart
(ISC dhcpd), or Kea's hosts database against config-reload (``--server kea``).

For each inventory size the pipeline runs twice on the same database (bench/dhcp_lab.py:
PostgreSQL with fsync on, ActiveMQ, the installed ``cdc-relay`` and ``dhcp-generator``,
a real ISC dhcpd in a network namespace; needs root): once applying host changes over
OMAPI (``--omapi``, the reload command still set for non-host changes), once restarting
dhcpd for every change. Each path gets the same kind of isolated changes, one at a time,
alternating:

* move: ``UPDATE interface SET ip = NEW`` of an interface not touched before;
* add: a new host and its interface (MAC and address) in one transaction.

A probe in the client namespace broadcasts a DHCPDISCOVER for the changed MAC every
``--probe-ms`` and the clock runs from just before COMMIT to the first DHCPOFFER of the
NEW address (served). With ``--server kea`` the two paths are hosts-db (reservations
in Kea's PostgreSQL ``hosts`` table, read per lookup, no reload) and config-reload
(inline reservations, ``config-reload`` through the control socket); Kea's
``DHCP4_CONFIG_COMPLETE`` lines are counted over each path's changes. The next change
commits 1.2-1.6 s after the generator's last pass (past its 1 s coalescing window).
Also recorded: the reservation in place (file, or Kea's hosts table), and for moves
the longest time the MAC went without any offer after the commit (a restart
leaves clients unanswered; OMAPI should not).

    .venv/bin/python bench/served_latency.py [--server isc|kea] [--sizes 10000,100000]
        [--changes 100,40] [--paths omapi,restart | hosts-db,config-reload] [--probe-ms 2]
        [--plot docs/served_latency.png | docs/kea_served_latency.png]
        [--json FILE] [--from-json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dhcp_lab
import psycopg

from tests.e2e import netns

ROOT = dhcp_lab.ROOT
CHANGE_DEADLINE = 60.0  # seconds for one change to be served and in the file
SERVING_DEADLINE = 10.0  # seconds for the old address to be offered before a move
POLL = 0.002  # seconds: the file's stat loop
TRAILING_WAITS = 5  # gaps waited at most for the generator to stay idle
PAIR = ("omapi", "restart")  # ISC's paths: the fast one, the one it is compared with


def passes(lab: dhcp_lab.Lab) -> float:
    """Passes the generator finished (configs applied, or found unchanged)."""
    c = dhcp_lab.counters(lab)
    return c["omapi"] + c["restart"] + c["unchanged"]  # kea_hosts: before its file's pass


def pending(lab: dhcp_lab.Lab) -> bool:
    return lab.metrics().get("dhcp_generator_pending_messages", 0.0) > 0


def change_kinds(count: int) -> list[str]:
    return ["move" if k % 2 == 0 else "add" for k in range(count)]


def measure_path(
    lab: dhcp_lab.Lab,
    url: str,
    prober: dhcp_lab.Prober,
    *,
    hosts: int,
    changes: int,
    gap: tuple[float, float],
    rng: random.Random,
    counter: dict[str, int],
    movable: list[int],
) -> list[dict[str, Any]]:
    """``changes`` isolated changes through ``lab``; one record each. Moves take their
    interfaces from ``movable`` (never moved before, so their load address holds)."""
    net = lab.net
    results: list[dict[str, Any]] = []
    with psycopg.connect(url) as conn:
        for k, kind in enumerate(change_kinds(changes)):
            if kind == "move":
                interface = movable.pop()
                mac = dhcp_lab.mac_of(interface)
                old = dhcp_lab.address_of(net, interface)
                new = str(net.host(dhcp_lab.MOVE_BASE + counter["move"]))
                counter["move"] += 1
                prober.watch(mac)
                started = time.monotonic()
                netns.wait_until(
                    lambda old=old, started=started: prober.first(old, started),  # type: ignore[misc]
                    SERVING_DEADLINE,
                    f"an offer of {old} before the move",
                )
                conn.execute("UPDATE interface SET ip = %s WHERE id = %s", [new, interface])
            else:
                n = counter["add"]
                counter["add"] += 1
                mac = "02:01:" + ":".join(f"{b:02x}" for b in n.to_bytes(4, "big"))
                new = str(net.host(dhcp_lab.ADD_BASE + n))
                row = conn.execute(
                    "INSERT INTO host (hostname) VALUES (%s) RETURNING id", [f"added{n}"]
                ).fetchone()
                assert row is not None
                conn.execute(
                    "INSERT INTO interface (host_id, name, mac, ip) VALUES (%s, 'eth0', %s, %s)",
                    [row[0], mac, new],
                )
                prober.watch(mac)
            passes_before = passes(lab)
            t_commit = time.monotonic()
            conn.commit()
            t_committed = time.monotonic()
            served = netns.wait_until(
                lambda new=new, t=t_commit: prober.first(new, t),  # type: ignore[misc]
                CHANGE_DEADLINE,
                f"change {k}: an offer of {new}",
            )
            end = time.monotonic() + CHANGE_DEADLINE
            while not lab.in_place(new):
                if time.monotonic() > end:
                    raise netns.HarnessError(f"change {k}: {new} not in {lab.output} in time")
                time.sleep(POLL)
            t_file = time.monotonic()
            passes_done = netns.wait_until(
                lambda before=passes_before: (n := passes(lab)) > before and n,  # type: ignore[misc]
                CHANGE_DEADLINE,
                f"change {k}: the generator counting its pass",
            )
            record = {
                "kind": kind,
                "served": served - t_commit,
                "file": t_file - t_commit,
                "commit_duration": t_committed - t_commit,
            }
            if kind == "move":
                moments = [t_commit, *(t for t, _ in prober.since(t_commit) if t <= served)]
                record["silence"] = max(b - a for a, b in itertools.pairwise(moments))
            results.append(record)
            prober.watch(None)
            if (k + 1) % 20 == 0:
                print(f"    {k + 1}/{changes} changes", file=sys.stderr)
            # Isolated: the next commit comes after the generator's coalescing window,
            # counted from its last pass. A change of two rows can cost a second pass
            # (when its second message arrives after the first pass's snapshot began):
            # then the window starts again from that pass.
            time.sleep(rng.uniform(*gap))
            for _ in range(TRAILING_WAITS):
                if passes(lab) == passes_done and not pending(lab):
                    break
                record["trailing_pass"] = True
                passes_done = passes(lab)
                time.sleep(rng.uniform(*gap))
    return results


def measure(args: argparse.Namespace) -> dict[str, Any] | None:
    ok, missing = netns.available()
    have_server = netns.have_kea() if args.server == "kea" else netns.have_dhcpd()
    if not ok or not have_server or not dhcp_lab.pipeline.have_commands():
        print(f"needs root, ip netns, {args.server}'s server and the commands ({missing})")
        return None
    rng = random.Random(args.seed)
    state = Path(tempfile.mkdtemp(prefix="mdb-bench-served-"))
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        with dhcp_lab.services_up(state) as (cluster, stomp):
            for hosts, changes in zip(args.sizes, args.changes, strict=True):
                with ExitStack() as stack:
                    net = stack.enter_context(netns.link(dhcp_lab.PREFIX, control=True))
                    dhcp_lab.client_address(net)
                    print(f"loading {hosts} hosts", file=sys.stderr)
                    url = dhcp_lab.database(cluster, f"hosts{hosts}", net, hosts)
                    prober = dhcp_lab.Prober(net, args.probe_ms / 1000)
                    stack.callback(prober.close)
                    counter = {"move": 0, "add": 0}
                    movable = rng.sample(range(1, hosts + 1), k=changes * len(args.paths))
                    for path in args.paths:
                        print(f"  {hosts} hosts, {path}: starting", file=sys.stderr)
                        workdir = state / f"{hosts}-{path}"
                        with dhcp_lab.lab(
                            path=path,
                            url=url,
                            stomp=stomp,
                            net=net,
                            hosts=hosts,
                            workdir=workdir,
                            cluster=cluster,
                        ) as lab:
                            before = dhcp_lab.counters(lab)
                            print(f"  {hosts} hosts, {path}: {changes} changes", file=sys.stderr)
                            results = measure_path(
                                lab,
                                url,
                                prober,
                                hosts=hosts,
                                changes=changes,
                                gap=(args.gap[0], args.gap[1]),
                                rng=rng,
                                counter=counter,
                                movable=movable,
                            )
                            after = dhcp_lab.counters(lab)
                            log = dhcp_lab.log_lines(
                                lab.generator_log, "fallback", "ERROR", "WARNING", "connected"
                            )
                        runs.append(
                            {
                                "hosts": hosts,
                                "path": path,
                                "results": results,
                                "counters": {k: after[k] - before[k] for k in after},
                                "log": log[-20:],
                            }
                        )
                        if args.json:  # so far: a later failure keeps what was measured
                            args.json.write_text(json.dumps({"partial": True, "runs": runs}))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return {
        "server": args.server,
        "machine": dhcp_lab.machine(),
        "probe_ms": args.probe_ms,
        "wall_seconds": time.monotonic() - started,
        "runs": runs,
    }


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def report(run: dict[str, Any], plot_path: Path | None) -> None:
    print(
        f"\nmachine: {run.get('machine', '?')}; probe every {run.get('probe_ms', '?')} ms;"
        f" wall time {run.get('wall_seconds', float('nan')) / 60:.1f} min"
    )
    placed = "reservation in place p50" if run.get("server") == "kea" else "file in place p50"
    print(
        "\n| hosts | path | n | p50 | p95 | p99 | max | p50 move / add |"
        f" {placed} | longest silence (moves) p50 / max |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in run["runs"]:
        served = [x["served"] for x in r["results"]]
        by_kind = {
            kind: [x["served"] for x in r["results"] if x["kind"] == kind]
            for kind in ("move", "add")
        }
        silence = [x["silence"] for x in r["results"] if "silence" in x]
        q = dhcp_lab.percentile
        print(
            f"| {r['hosts']:,} | {r['path']} | {len(served)} | **{fmt(q(served, 0.5))}** |"
            f" {fmt(q(served, 0.95))} | **{fmt(q(served, 0.99))}** | {fmt(max(served))} |"
            f" {fmt(q(by_kind['move'], 0.5))} / {fmt(q(by_kind['add'], 0.5))} |"
            f" {fmt(q([x['file'] for x in r['results']], 0.5))} |"
            f" {fmt(q(silence, 0.5))} / {fmt(max(silence))} |"
        )
    trailing = {
        f"{r['hosts']:,} {r['path']}": sum(1 for x in r["results"] if x.get("trailing_pass"))
        for r in run["runs"]
    }
    print(f"\nchanges followed by a second pass, waited out before the next: {trailing}")
    fast, slow = ("hosts-db", "config-reload") if run.get("server") == "kea" else PAIR
    print(f"\nratios ({slow} / {fast}, p50 and p99):")
    by = {(r["hosts"], r["path"]): [x["served"] for x in r["results"]] for r in run["runs"]}
    for hosts in sorted({h for h, _ in by}):
        if (hosts, fast) in by and (hosts, slow) in by:
            o, s = by[(hosts, fast)], by[(hosts, slow)]
            q = dhcp_lab.percentile
            print(
                f"  {hosts:,} hosts: p50 x{q(s, 0.5) / q(o, 0.5):.1f},"
                f" p99 x{q(s, 0.99) / q(o, 0.99):.1f}"
            )
    print("\ngenerator counters during each path's changes:")
    for r in run["runs"]:
        c = r["counters"]
        if run.get("server") == "kea":
            print(
                f"  {r['hosts']:,} {r['path']}: applies kea_hosts={c.get('kea_hosts', 0):.0f}"
                f" restart (config-reload)={c['restart']:.0f} unchanged={c['unchanged']:.0f};"
                f" Kea DHCP4_CONFIG_COMPLETE during the changes:"
                f" {c.get('reconfigurations', 0):.0f}"
            )
        else:
            print(
                f"  {r['hosts']:,} {r['path']}: applies omapi={c['omapi']:.0f}"
                f" restart={c['restart']:.0f} unchanged={c['unchanged']:.0f},"
                f" omapi fallbacks={c['fallbacks']:.0f}, mismatches={c['mismatches']:.0f}"
            )
        for line in r["log"]:
            print(f"    log: {line[:200]}")
    commits = [x["commit_duration"] for r in run["runs"] for x in r["results"]]
    print(f"\nCOMMIT itself: p50 {statistics.median(commits) * 1e3:.1f} ms (included)")
    if plot_path is not None:
        plot(run, plot_path)
        print(f"plot: {plot_path}")


def plot(run: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (bench-only dependency)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {
        "omapi": "tab:blue",
        "restart": "tab:red",
        "hosts-db": "tab:blue",
        "config-reload": "tab:red",
    }
    sizes = sorted({r["hosts"] for r in run["runs"]})
    styles = ["-", "--", ":", "-."]
    for r in run["runs"]:
        values = sorted(x["served"] * 1e3 for x in r["results"])
        ys = [(i + 1) / len(values) for i in range(len(values))]
        style = styles[sizes.index(r["hosts"]) % len(styles)]
        label = f"{r['path']}, {r['hosts']:,} hosts (n={len(values)})"
        ax.step(values, ys, style, color=colors.get(r["path"]), where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("commit to first DHCPOFFER of the new address (ms, log scale)")
    ax.set_ylabel("share of changes served")
    if run.get("server") == "kea":
        ax.set_title(
            "Served latency of one host change: Kea's hosts database against config-reload"
        )
    else:
        ax.set_title("Served latency of one host change: OMAPI against a dhcpd restart")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def integers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=integers, default=[10_000, 100_000], help="host counts")
    parser.add_argument(
        "--changes",
        type=integers,
        default=[100, 40],
        help="changes per path, one number per size (default 100,40)",
    )
    parser.add_argument("--server", choices=sorted(dhcp_lab.SERVERS), default="isc")
    parser.add_argument(
        "--paths",
        type=lambda s: s.split(","),
        help="default: omapi,restart (isc) or hosts-db,config-reload (kea)",
    )
    parser.add_argument("--probe-ms", type=float, default=2.0)
    parser.add_argument(
        "--gap",
        type=float,
        nargs=2,
        default=(1.2, 1.6),
        metavar=("MIN", "MAX"),
        help="seconds between one change served and the next commit (past the generator's"
        " 1 s coalescing window, so each change is isolated)",
    )
    parser.add_argument(
        "--plot", type=Path, help="default: docs/served_latency.png, kea_served_latency.png"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    parser.add_argument("--from-json", type=Path, help="report and plot a saved --json run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if len(args.changes) == 1:
        args.changes = args.changes * len(args.sizes)
    if len(args.changes) != len(args.sizes):
        parser.error("--changes needs one number, or one per size")
    known = dhcp_lab.SERVERS[args.server]
    args.paths = args.paths or list(known)
    if unknown := set(args.paths) - set(known):
        parser.error(f"unknown paths for {args.server}: {sorted(unknown)}")
    run = dhcp_lab.run_or_load(args, measure)
    if run is None:
        return 2
    name = "kea_served_latency.png" if run.get("server") == "kea" else "served_latency.png"
    report(run, None if args.no_plot else args.plot or ROOT / "docs" / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
