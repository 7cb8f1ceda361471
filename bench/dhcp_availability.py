#!/usr/bin/env python3
"""DHCP availability under changes: perfdhcp against dhcpd while one change a second commits.

The pipeline of bench/dhcp_lab.py (PostgreSQL with fsync on, ActiveMQ, the installed
``cdc-relay`` and ``dhcp-generator``, a real ISC dhcpd in a network namespace; needs
root) serves N hosts and a dynamic pool. ISC's ``perfdhcp`` runs in the client namespace
at a fixed rate of DHCPv4 4-way exchanges (DISCOVER-OFFER, REQUEST-ACK) from simulated
clients, and counts the exchanges dhcpd left unanswered (perfdhcp's drop time: 1 s).
Three cases, one after another on the same database, each with a fresh dhcpd:

* omapi: host changes go over OMAPI (``--omapi``; the reload command still set);
* restart: no OMAPI; each change restarts dhcpd;
* none: the omapi setup, and no changes at all (the baseline).

With ``--server kea``, against kea-dhcp4: hosts-db (reservations in Kea's hosts
database, no reload), config-reload (inline reservations, ``config-reload`` per change)
and none (the hosts-db setup, no changes).

During the omapi and restart runs, one change commits every ``--change-every`` seconds,
alternately a moved interface address and a new host with its interface. The simulated
clients take pool leases: a warm-up run first gives every one of them its lease, so
the measured run sees steady-state renewals, not first allocations (for a first
allocation dhcpd pings the address and answers ~1 s later, which perfdhcp counts as
drops).

    .venv/bin/python bench/dhcp_availability.py [--server isc|kea] [--hosts 10000]
        [--rate 50] [--seconds 60] [--clients 100] [--change-every 1]
        [--cases omapi,restart,none | hosts-db,config-reload,none] [--json FILE]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
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
PERFDHCP = "/usr/sbin/perfdhcp"
CASES = {"isc": ("omapi", "restart", "none"), "kea": ("hosts-db", "config-reload", "none")}
PATH_OF = {
    "isc": {"omapi": "omapi", "restart": "restart", "none": "omapi"},
    "kea": {"hosts-db": "hosts-db", "config-reload": "config-reload", "none": "hosts-db"},
}
PERFDHCP_GRACE = 60.0  # seconds past its test period before perfdhcp is given up on
WARM_UP = 10  # seconds of perfdhcp before each measured run
STAT = re.compile(r"^\s*(?P<key>[a-z ]+):\s*(?P<value>[0-9.]+)", re.MULTILINE)


def perfdhcp_command(net: netns.Link, *, rate: int, seconds: int, clients: int) -> list[str]:
    cmd = ["ip", "netns", "exec", net.client_ns, PERFDHCP, "-4", "-l", net.client_if]
    return [*cmd, "-r", str(rate), "-p", str(seconds), "-R", str(clients)]


def parse(output: str) -> dict[str, Any]:
    """perfdhcp's figures: the rate, and per exchange sent/received/drops and delays."""
    result: dict[str, Any] = {}
    rate = re.search(r"Rate: ([0-9.]+)", output)
    result["rate"] = float(rate.group(1)) if rate else None
    for name, label in (("DISCOVER-OFFER", "do"), ("REQUEST-ACK", "ra")):
        marker = f"***Statistics for: {name}***"
        if marker not in output:
            continue
        section = output.split(marker, 1)[1].split("***Statistics for", 1)[0]
        values = {m["key"].strip(): float(m["value"]) for m in STAT.finditer(section)}
        result[label] = {
            "sent": values.get("sent packets"),
            "received": values.get("received packets"),
            "drops": values.get("drops"),
            "avg_ms": values.get("avg delay"),
            "max_ms": values.get("max delay"),
        }
    return result


def change(conn: psycopg.Connection[Any], net: netns.Link, k: int, state: dict[str, Any]) -> None:
    """One committed change: a moved interface (even k) or a new host (odd k)."""
    if k % 2 == 0:
        interface = state["movable"].pop()
        new = str(net.host(dhcp_lab.MOVE_BASE + state["moved"]))
        state["moved"] += 1
        conn.execute("UPDATE interface SET ip = %s WHERE id = %s", [new, interface])
    else:
        n = state["added"]
        state["added"] += 1
        mac = "02:01:" + ":".join(f"{b:02x}" for b in n.to_bytes(4, "big"))
        row = conn.execute(
            "INSERT INTO host (hostname) VALUES (%s) RETURNING id", [f"added{n}"]
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO interface (host_id, name, mac, ip) VALUES (%s, 'eth0', %s, %s)",
            [row[0], mac, str(net.host(dhcp_lab.ADD_BASE + n))],
        )
    conn.commit()


def run_case(
    lab: dhcp_lab.Lab, url: str, case: str, args: argparse.Namespace, state: dict[str, Any]
) -> dict[str, Any]:
    net = lab.net
    warm = perfdhcp_command(net, rate=args.rate, seconds=WARM_UP, clients=args.clients)
    warm_up = subprocess.run(
        warm, capture_output=True, text=True, timeout=WARM_UP + PERFDHCP_GRACE, check=False
    )
    before = dhcp_lab.counters(lab)
    cmd = perfdhcp_command(net, rate=args.rate, seconds=args.seconds, clients=args.clients)
    committed = 0
    with (
        psycopg.connect(url) as conn,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as perf,
    ):
        started = time.monotonic()
        if case != "none":
            # the first change a second in, the last one second before the end
            while True:
                due = started + (committed + 1) * args.change_every
                if due > started + args.seconds - 1:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                change(conn, net, state["k"], state)
                state["k"] += 1
                committed += 1
        try:
            output, _ = perf.communicate(timeout=args.seconds + PERFDHCP_GRACE)
        except subprocess.TimeoutExpired:
            perf.kill()
            output, _ = perf.communicate()
    # let the last change land before the counters are read
    time.sleep(2 * args.change_every)
    after = dhcp_lab.counters(lab)
    figures = parse(output)
    return {
        "case": case,
        "changes": committed,
        "perfdhcp": figures,
        "warm_up": parse(warm_up.stdout),
        "counters": {k: after[k] - before[k] for k in after},
        "log": dhcp_lab.log_lines(lab.generator_log, "fallback", "ERROR", "WARNING")[-20:],
        "output": output,
    }


def measure(args: argparse.Namespace) -> dict[str, Any] | None:
    ok, missing = netns.available()
    have_server = netns.have_kea() if args.server == "kea" else netns.have_dhcpd()
    if not ok or not have_server or not dhcp_lab.pipeline.have_commands():
        print(f"needs root, ip netns, {args.server}'s server and the commands ({missing})")
        return None
    if not Path(PERFDHCP).exists():
        print(f"needs {PERFDHCP} (Debian package kea-admin)")
        return None
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mdb-bench-avail-"))
    cases: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        with dhcp_lab.services_up(work) as (cluster, stomp), ExitStack() as stack:
            net = stack.enter_context(netns.link(dhcp_lab.PREFIX, control=True))
            dhcp_lab.client_address(net)
            print(f"loading {args.hosts} hosts", file=sys.stderr)
            url = dhcp_lab.database(cluster, "availability", net, args.hosts)
            state: dict[str, Any] = {
                "movable": rng.sample(range(1, args.hosts + 1), k=min(args.hosts, 5000)),
                "moved": 0,
                "added": 0,
                "k": 0,
            }
            for case in args.cases:
                print(f"  {case}: starting", file=sys.stderr)
                workdir = work / case
                with dhcp_lab.lab(
                    path=PATH_OF[args.server][case],
                    url=url,
                    stomp=stomp,
                    net=net,
                    hosts=args.hosts,
                    workdir=workdir,
                    cluster=cluster,
                ) as lab:
                    print(f"  {case}: perfdhcp for {args.seconds} s", file=sys.stderr)
                    cases.append(run_case(lab, url, case, args, state))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "server": args.server,
        "machine": dhcp_lab.machine(),
        "hosts": args.hosts,
        "rate": args.rate,
        "seconds": args.seconds,
        "clients": args.clients,
        "change_every": args.change_every,
        "wall_seconds": time.monotonic() - started,
        "cases": cases,
    }


def report(run: dict[str, Any]) -> None:
    print(
        f"\n{run['hosts']:,} hosts; perfdhcp -r {run['rate']} -p {run['seconds']}"
        f" -R {run['clients']}; a change every {run['change_every']:g} s;"
        f" machine: {run['machine']}; wall time {run['wall_seconds'] / 60:.1f} min"
    )
    print(
        "\n| case | changes | exchanges started | completed | **unanswered** |"
        " DISCOVER drops | REQUEST drops | offer delay avg / max | ack delay avg / max |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in run["cases"]:
        p = c["perfdhcp"]
        do, ra = p.get("do", {}), p.get("ra", {})
        started = do.get("sent") or 0
        completed = ra.get("received") or 0
        print(
            f"| {c['case']} | {c['changes']} | {started:.0f} | {completed:.0f} |"
            f" **{started - completed:.0f}** | {do.get('drops', 0):.0f} |"
            f" {ra.get('drops', 0):.0f} |"
            f" {do.get('avg_ms', 0):.2f} / {do.get('max_ms', 0):.1f} ms |"
            f" {ra.get('avg_ms', 0):.2f} / {ra.get('max_ms', 0):.1f} ms |"
        )
    print("\ngenerator counters during each run, and the warm-up's drops:")
    for c in run["cases"]:
        n = c["counters"]
        warm = c["warm_up"].get("do", {})
        if run.get("server") == "kea":
            applied = (
                f"applies kea_hosts={n.get('kea_hosts', 0):.0f}"
                f" restart (config-reload)={n['restart']:.0f} unchanged={n['unchanged']:.0f},"
                f" Kea DHCP4_CONFIG_COMPLETE {n.get('reconfigurations', 0):.0f}"
            )
        else:
            applied = (
                f"applies omapi={n['omapi']:.0f} restart={n['restart']:.0f}"
                f" unchanged={n['unchanged']:.0f}, omapi fallbacks={n['fallbacks']:.0f},"
                f" mismatches={n['mismatches']:.0f}"
            )
        print(
            f"  {c['case']}: {applied}; warm-up DISCOVER drops"
            f" {warm.get('drops', 0):.0f} of {warm.get('sent', 0):.0f}"
        )
        for line in c["log"]:
            print(f"    log: {line[:200]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=50, help="exchanges per second")
    parser.add_argument("--seconds", type=int, default=60, help="perfdhcp's test period")
    parser.add_argument("--clients", type=int, default=100, help="perfdhcp -R")
    parser.add_argument("--change-every", type=float, default=1.0, help="seconds")
    parser.add_argument("--server", choices=sorted(CASES), default="isc")
    parser.add_argument(
        "--cases",
        type=lambda s: s.split(","),
        help="default: omapi,restart,none (isc) or hosts-db,config-reload,none (kea)",
    )
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    parser.add_argument("--from-json", type=Path, help="report a saved --json run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.cases = args.cases or list(CASES[args.server])
    if unknown := set(args.cases) - set(CASES[args.server]):
        parser.error(f"unknown cases for {args.server}: {sorted(unknown)}")
    run = dhcp_lab.run_or_load(args, measure)
    if run is None:
        return 2
    report(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
