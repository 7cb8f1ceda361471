#!/usr/bin/env python3
"""Pair served latency: how fast a failover pair serves a reservation committed in the
database, with both peers up and by the survivor while the primary is down.

The pair is bench/failover_takeover.py's (its ``isc_pair`` / ``kea_pair``, built from
the database as the end-to-end tests build theirs): PostgreSQL (fsync on) and ActiveMQ
from scripts/services.py, the installed ``cdc-relay``, one ``dhcp-generator --server
NAME`` per server; two ISC dhcpd in ``isc-failover`` (host changes over OMAPI) or two
kea-dhcp4 with their kea-ctrl-agent in ``kea-hot-standby`` (host changes through each
server's own Kea hosts database), in two server namespaces on one bridge, with the
end-to-end tests' timers (ISC: MCLT 10 s, max-response-delay 5 s; Kea: heartbeat 1 s,
max-response-delay 3 s, max-ack-delay 1 s, max-unacked-clients 0). The inventory is
``--inventory`` reserved hosts on the segment. Needs root.

Each change is one host and its interface, INSERTed and COMMITted over one psycopg
connection. A probe in the client namespace broadcasts a DHCPDISCOVER for the new MAC
every ``--probe-ms`` from just before the COMMIT; the clock runs from just before the
COMMIT to the first DHCPOFFER of the reserved address, and the offer's server identifier
says which peer answered. Meanwhile the reservation is looked for where each live peer
reads it (ISC: the host in its dhcpd.conf, which the generator writes after the OMAPI
update; Kea: the row in its hosts table), every few ms. The next change commits 1.2-1.6 s
after every live peer has the last one (``--gap``): past the relay's 0.5 s linger (after
a change it looks for the next every 100 ms instead of waiting for NOTIFY) and the
generators' coalescing window (0.1 s in failover_takeover's ISC pair, the default 1 s in
its Kea pair), so each change reaches the servers at once.

* phase ``both``: ``--changes`` changes with both peers up and in their normal states
  (ISC: normal/normal; Kea: hot-standby, the primary serving);
* phase ``survivor``: the primary's generator, then its dhcpd (Kea: kea-dhcp4, then its
  agent) are SIGKILLed, and once the survivor is communications-interrupted (ISC) or
  partner-down (Kea) and has answered the probe, ``--changes`` more changes.

With ``--udhcpc K``, K more changes in the survivor phase are timed the way the
end-to-end tests time theirs: busybox udhcpc runs (3 DISCOVERs a second apart, -n -q)
one after the other until one binds the reserved address, while an AF_PACKET capture on
the client's interface records every DISCOVER, REQUEST and answer; the report lists them
per change, with the survivor's Kea log lines for that MAC. ``--udhcpc-gap`` shorter than
the generator's window makes each of these changes wait the window out, so the
reservation lands at a random moment of udhcpc's exchanges.

    .venv/bin/python bench/pair_served_latency.py [--server isc|kea] [--runs 2]
        [--changes 40] [--inventory 100] [--probe-ms 2] [--probe-delay-ms 0] [--udhcpc 0]
        [--gap MIN MAX] [--udhcpc-gap MIN MAX]
        [--json FILE] [--from-json FILE] [--logs DIR]

docs/benchmarks.md ("Pair served latency") has the figures and what they mean.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dhcp_lab  # bench/dhcp_lab.py: the probe, services, percentiles; ROOT on the path
import failover_takeover as takeover  # bench/failover_takeover.py: the pair, the capture
import psycopg
import services  # scripts/services.py (on the path through dhcp_lab)

from tests.e2e import netns, segment
from tests.e2e import test_failover_kea as kea_e2e
from tests.integration import kea_hosts_support as khs

PHASES = ("both", "survivor")
SURVIVOR_STATE = {"isc": "communications-interrupted", "kea": "partner-down"}
CHANGES = 40  # per phase
INVENTORY = 100  # reserved hosts on the segment before the first change
PROBE_MS = 2.0  # milliseconds between two DISCOVERs of the probe
# seconds from the last peer's reservation in place to the next commit: past the relay's
# linger (cdc/rules.LINGER, 0.5 s: until then it looks for changes every 100 ms, not on
# NOTIFY) and the generators' coalescing window (failover_takeover's ISC pair passes
# --window 0.1, its Kea pair leaves the default 1 s), so each change goes at once
GAP = (1.2, 1.6)
POLL = 0.004  # seconds between two looks for the reservation where a peer reads it
CHANGE_DEADLINE = 30.0  # seconds for a change to be served and in place on every live peer
STATE_DEADLINE = 30.0  # seconds for the survivor's state after the SIGKILL
SERVE_DEADLINE = 30.0  # seconds for the survivor's first answer in its new state
UDHCPC_DEADLINE = 60.0  # seconds of udhcpc runs for one change
FIRST_CHANGE = takeover.RESERVED_BASE  # changes take host numbers after the inventory's
LAST_HOST = takeover.POOL[0] - 1  # the last host number below the pool
MAX_OFFERS_KEPT = 12  # offers of other addresses kept per change (the first ones)
_KEA_LINE = re.compile(r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (?P<rest>.*)$")


# --- pure parts -----------------------------------------------------------------------


def quantiles(values: list[float]) -> dict[str, float]:
    """n, p50, p90, p99, max of ``values`` (seconds), the percentiles interpolated."""
    if not values:
        return {"n": 0}
    q = dhcp_lab.percentile
    return {
        "n": len(values),
        "p50": q(values, 0.5),
        "p90": q(values, 0.9),
        "p99": q(values, 0.99),
        "max": max(values),
    }


def kea_lines(log: str, mac: str, *, since: float, until: float) -> list[tuple[float, str]]:
    """(epoch seconds, text) of Kea's log lines naming ``mac`` between two moments."""
    found = []
    for line in log.splitlines():
        if mac not in line:
            continue
        match = _KEA_LINE.match(line)
        if match is None:
            continue
        at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if since <= at <= until:
            found.append((at, match["rest"]))
    return found


def exchange_lines(
    packets: Iterable[takeover.Packet], mac: str, *, since: float, until: float
) -> list[tuple[float, str, str | None]]:
    """(epoch seconds, message kind, server identifier) of the captured messages of
    ``mac`` between two moments."""
    names = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK"}
    return [
        (p.at, names.get(p.kind, str(p.kind)), p.server)
        for p in sorted(packets, key=lambda p: p.at)
        if p.mac == mac and since <= p.at <= until
    ]


def kea_short(text: str) -> str:
    """A Kea log line's message id and what it says of the lease (``lease ADDRESS``)."""
    code = re.search(r"\b(DHCP4_[A-Z0-9_]+|HA_[A-Z0-9_]+)", text)
    lease = re.search(r"lease \S+|address \S+", text)
    if code is None:
        return text[:120]
    return code[1] + (f" {lease[0].rstrip(',:')}" if lease else "")


def change_mac(run: int, n: int) -> str:
    """The MAC of change ``n`` of run ``run`` (the inventory's are 02:5e:...)."""
    return f"02:5f:{run & 0xFF:02x}:01:{n >> 8:02x}:{n & 0xFF:02x}"


# --- the pair's peers -----------------------------------------------------------------


@dataclass
class Peer:
    """One server of the pair: its address and where to look for a reservation."""

    role: str  # primary, secondary
    address: str
    holds: Callable[[str, str], bool]  # (mac, ip) -> the reservation is where it reads it
    log: Path | None = None  # Kea's log
    generator_log: Path | None = None


def _kea_databases(cluster: services.PostgresCluster) -> set[str]:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'kea\\_%'")
        return {row[0] for row in rows} - {khs.TEMPLATE}


def _kea_holds(url: str, stack: contextlib.ExitStack) -> Callable[[str, str], bool]:
    conn = stack.enter_context(psycopg.connect(url, autocommit=True))

    def holds(mac: str, ip: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM hosts WHERE dhcp_identifier = decode(%s, 'hex')"
            " AND ipv4_address = %s::inet - '0.0.0.0'::inet",
            [mac.replace(":", ""), ip],
        ).fetchone()
        return row is not None

    return holds


def peers(
    lab: takeover.Lab,
    cluster: services.PostgresCluster,
    stack: contextlib.ExitStack,
    kea_before: set[str],
) -> dict[str, Peer]:
    """The two peers of the pair failover_takeover built, primary first."""
    if lab.server == "isc":
        a, b = lab.kill["dhcpd"], lab.kill["survivor"]
        return {
            "primary": Peer(role="primary", address=a.address, holds=a.holds,
                            generator_log=a.workdir / "generator.log"),
            "secondary": Peer(role="secondary", address=b.address, holds=b.holds,
                              generator_log=b.workdir / "generator.log"),
        }  # fmt: skip
    # kea_pair keeps its sides to itself: the two Kea hosts databases it made are the
    # new ones; the primary's is the one its generator writes
    made = sorted(_kea_databases(cluster) - kea_before)
    primary_args = " ".join(map(str, lab.kill["generator"].args))
    ours = [name for name in made if f"/{name}" in primary_args]
    if len(made) != 2 or len(ours) != 1:
        raise netns.HarnessError(f"cannot tell the pair's Kea hosts databases: {made}")
    theirs = next(name for name in made if name not in ours)
    found = {}
    for role, name, side, address in (
        ("primary", ours[0], kea_e2e.SERVERS[0], lab.primary),
        ("secondary", theirs, kea_e2e.SERVERS[1], lab.secondary),
    ):
        workdir = lab.workdir / side
        found[role] = Peer(
            role=role, address=address, holds=_kea_holds(cluster.url(name), stack),
            log=netns.kea_paths(workdir)["log"], generator_log=workdir / "generator.log",
        )  # fmt: skip
    return found


def survivor_state(lab: takeover.Lab) -> str | None:
    """The survivor's own failover state (ISC over OMAPI, Kea over its control socket)."""
    if lab.server == "isc":
        state = lab.kill["survivor"].failover_state()
        return state[0] if state else None
    socket_path = netns.kea_paths(lab.workdir / kea_e2e.SERVERS[1])["control_socket"]
    try:
        answer = netns.kea_command(socket_path, "ha-heartbeat", timeout=2.0)
    except (OSError, ValueError):
        return None
    state = (answer.get("arguments") or {}).get("state")
    return str(state) if state is not None else None


# --- one change -----------------------------------------------------------------------


def insert_host(conn: psycopg.Connection[Any], hostname: str, mac: str, ip: str) -> None:
    row = conn.execute(
        "INSERT INTO host (hostname) VALUES (%s) RETURNING id", [hostname]
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (%s, 'eth0', %s, %s)",
        [row[0], mac, ip],
    )


def probe_change(
    conn: psycopg.Connection[Any],
    prober: dhcp_lab.Prober,
    live: dict[str, Peer],
    *,
    hostname: str,
    mac: str,
    ip: str,
    delay: float = 0.0,
) -> dict[str, Any]:
    """One change, probed from ``delay`` seconds after the commit on: commit to the first
    offer of ``ip``, and to the reservation in place on each live peer."""
    insert_host(conn, hostname, mac, ip)
    wall = time.time()
    t_commit = time.monotonic()
    prober.watch(mac, start=t_commit + delay)
    conn.commit()
    t_committed = time.monotonic()
    served: tuple[float, str | None] | None = None
    placed: dict[str, float] = {}
    deadline = t_commit + CHANGE_DEADLINE
    while served is None or len(placed) < len(live):
        if served is None:
            served = prober.first_offer(ip, t_commit)
        for role, peer in live.items():
            if role not in placed and peer.holds(mac, ip):
                placed[role] = time.monotonic()
        if time.monotonic() > deadline:
            raise netns.HarnessError(
                f"{hostname}: offer of {ip} {served}, in place on {sorted(placed)} after"
                f" {CHANGE_DEADLINE} s"
            )
        time.sleep(POLL)
    offers, sent = prober.seen()
    prober.watch(None)
    first_at, server = served
    ours = [(t, s) for t, a, s in offers if a == ip]
    others = [(round(t - t_commit, 4), a, s) for t, a, s in offers if a != ip and t < first_at]
    return {
        "mac": mac,
        "ip": ip,
        "commit_wall": wall,
        "commit_duration": t_committed - t_commit,
        "served": first_at - t_commit,
        "server": server,
        "servers": sorted({str(s) for _, s in ours}),
        "by_server": {str(s): t - t_commit for t, s in reversed(ours)},  # each one's first
        "in_place": {role: at - t_commit for role, at in placed.items()},
        "sent_before": sum(1 for t in sent if t_commit <= t < first_at),
        "other_offers_before": len(others),
        "other_offers": others[:MAX_OFFERS_KEPT],
    }


def udhcpc_change(
    conn: psycopg.Connection[Any],
    client: netns.Client,
    survivor: Peer,
    *,
    hostname: str,
    mac: str,
    ip: str,
) -> dict[str, Any]:
    """One change timed as the end-to-end tests time theirs: udhcpc runs until one binds
    ``ip`` (each run: 3 DISCOVERs a second apart; the e2e's ``request``); meanwhile a
    thread looks for the reservation where the survivor reads it."""
    insert_host(conn, hostname, mac, ip)
    placed: list[float] = []
    done = threading.Event()

    def look() -> None:
        while not done.is_set() and not placed:
            if survivor.holds(mac, ip):
                placed.append(time.monotonic())
            else:
                done.wait(POLL)

    wall = time.time()
    t_commit = time.monotonic()
    conn.commit()
    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    attempts = []
    deadline = t_commit + UDHCPC_DEADLINE
    while True:
        started = time.monotonic()
        lease = kea_e2e.request(client, mac)
        ended = time.monotonic()
        attempts.append({
            "started": started - t_commit, "took": ended - started,
            "address": lease.address if lease else None, "server": lease.server if lease else None,
        })  # fmt: skip
        if lease is not None and lease.address == ip:
            break
        if ended > deadline:
            raise netns.HarnessError(f"{hostname}: udhcpc never bound {ip}: {attempts}")
    done.set()
    looker.join(5)
    return {
        "mac": mac,
        "ip": ip,
        "commit_wall": wall,
        "served": ended - t_commit,
        "server": attempts[-1]["server"],
        "attempts": attempts,
        "in_place": placed[0] - t_commit if placed else None,
        "end_wall": time.time(),
    }


# --- one run --------------------------------------------------------------------------


def phase(
    conn: psycopg.Connection[Any],
    prober: dhcp_lab.Prober,
    live: dict[str, Peer],
    hosts: Iterator[int],
    *,
    run: int,
    changes: int,
    rng: random.Random,
    seg: segment.Segment,
    label: str,
    gap: tuple[float, float],
    delay: float,
) -> list[dict[str, Any]]:
    results = []
    for _ in range(changes):
        n = next(hosts)
        record = probe_change(
            conn, prober, live, hostname=f"pl-{run}-{n}", mac=change_mac(run, n),
            ip=str(seg.host(n)), delay=delay,
        )  # fmt: skip
        results.append(record)
        if len(results) % 10 == 0:
            print(f"    {label}: {len(results)}/{changes}", file=sys.stderr)
        time.sleep(rng.uniform(*gap))
    return results


def run_once(
    args: argparse.Namespace, cluster: services.PostgresCluster, stomp: str, n: int
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mdb-pair-"))
    started = time.monotonic()
    rng = random.Random(n)
    record: dict[str, Any] = {"run": n}
    try:
        with contextlib.ExitStack() as stack:
            seg = stack.enter_context(segment.segment(servers=2, prefixlen=takeover.PREFIX))
            dhcp_lab.client_address(seg.servers[0])  # lets the probe's socket broadcast
            db_url = takeover._database(cluster, f"pairserved_{uuid.uuid4().hex[:8]}")
            lab = takeover.Lab(
                server=args.server, seg=seg, db_url=db_url,
                clients=takeover.macs(args.inventory, n), primary=str(seg.servers[0].server_ip),
                secondary=str(seg.servers[1].server_ip), workdir=work, kill={"reserved": True},
            )  # fmt: skip
            timers = takeover.TIMERS[(args.server, "test")]
            kea_before = _kea_databases(cluster) if args.server == "kea" else set()
            if args.server == "isc":
                stack.enter_context(takeover.isc_pair(lab, stack, stomp, timers))
            else:
                stack.enter_context(takeover.kea_pair(lab, stack, stomp, timers, cluster))
            record["setup_seconds"] = time.monotonic() - started
            record["timers"] = takeover.timers_of(db_url, args.server)
            both = peers(lab, cluster, stack, kea_before)
            prober = dhcp_lab.Prober(seg, args.probe_ms / 1000)
            stack.callback(prober.close)
            conn = stack.enter_context(psycopg.connect(db_url))
            hosts = iter(range(FIRST_CHANGE + args.inventory, LAST_HOST + 1))
            load = [os.getloadavg()[0]]
            print(f"run {n}: both peers up, {args.changes} changes", file=sys.stderr)
            record["both"] = phase(
                conn, prober, both, hosts, run=n, changes=args.changes, rng=rng, seg=seg,
                label="both", gap=args.gap, delay=args.probe_delay_ms / 1000,
            )  # fmt: skip
            load.append(os.getloadavg()[0])
            # the primary goes: its generator, then its server (Kea: and agent), SIGKILL
            killed = takeover.lose_primary(lab, "kill")
            killed_mono = time.monotonic() - (time.time() - killed)
            wanted = SURVIVOR_STATE[args.server]
            netns.wait_until(
                lambda: survivor_state(lab) == wanted, STATE_DEADLINE, f"the survivor {wanted}"
            )
            record["state_after"] = time.monotonic() - killed_mono
            # the survivor answers: the inventory's first reservation, from it
            first_mac, first_ip = lab.clients[0], str(seg.host(FIRST_CHANGE))
            prober.watch(first_mac)
            netns.wait_until(
                lambda: (f := prober.first_offer(first_ip, killed_mono)) and f[1] == lab.secondary,
                SERVE_DEADLINE, "the survivor's offer of an inventory reservation",
            )  # fmt: skip
            record["answers_after"] = prober.first(first_ip, killed_mono) - killed_mono  # type: ignore[operator]
            prober.watch(None)
            survivor = {"secondary": both["secondary"]}
            print(f"run {n}: survivor {wanted}, {args.changes} changes", file=sys.stderr)
            record["survivor"] = phase(
                conn, prober, survivor, hosts, run=n, changes=args.changes, rng=rng, seg=seg,
                label="survivor", gap=args.gap,
                delay=args.probe_delay_ms / 1000,
            )  # fmt: skip
            load.append(os.getloadavg()[0])
            record["udhcpc"] = []
            if args.udhcpc:
                record["udhcpc"] = udhcpc_phase(args, lab, conn, both["secondary"], hosts, n)
                load.append(os.getloadavg()[0])
            record["load"] = load
            record["kill_wall"] = killed
            record["primary"], record["secondary"] = lab.primary, lab.secondary
            if args.logs:
                keep_logs(args.logs / f"{args.server}-run{n}", both)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record["wall_seconds"] = time.monotonic() - started
    return record


def udhcpc_phase(
    args: argparse.Namespace,
    lab: takeover.Lab,
    conn: psycopg.Connection[Any],
    survivor: Peer,
    hosts: Iterator[int],
    n: int,
) -> list[dict[str, Any]]:
    """``--udhcpc`` changes timed with udhcpc, every frame captured, Kea's lines kept."""
    print(f"run {n}: {args.udhcpc} changes timed with udhcpc", file=sys.stderr)
    client = lab.seg.client(lab.workdir / "client")
    capture = takeover.Capture(lab.seg.client_ns, lab.seg.client_if)
    results = []
    try:
        for _ in range(args.udhcpc):
            k = next(hosts)
            results.append(
                udhcpc_change(
                    conn, client, survivor, hostname=f"pl-{n}-{k}", mac=change_mac(n, k),
                    ip=str(lab.seg.host(k)),
                )
            )  # fmt: skip
            time.sleep(random.uniform(*args.udhcpc_gap))
    finally:
        packets = capture.close()
    log = survivor.log.read_text(errors="replace") if survivor.log else ""
    for r in results:
        since, until = r["commit_wall"] - 0.5, r["end_wall"] + 0.5
        r["frames"] = [
            (round(at - r["commit_wall"], 4), kind, server)
            for at, kind, server in exchange_lines(packets, r["mac"], since=since, until=until)
        ]
        r["kea_log"] = [
            (round(at - r["commit_wall"], 4), text[:220])
            for at, text in kea_lines(log, r["mac"], since=since, until=until)
        ]
    return results


def keep_logs(target: Path, found: dict[str, Peer]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for role, peer in found.items():
        for path in (peer.log, peer.generator_log):
            if path is not None and path.exists():
                shutil.copy(path, target / f"{role}-{path.name}")


def measure(args: argparse.Namespace) -> dict[str, Any] | None:
    if not takeover.pair_available(args):
        return None
    if args.udhcpc and not shutil.which("busybox"):
        print("--udhcpc needs busybox")
        return None
    started = time.monotonic()
    runs = takeover.pair_runs(
        args, run_once, summary_line, prefix="mdb-pair-svc-",
        building=f"building the {args.server} pair",
    )  # fmt: skip
    return {
        "server": args.server,
        "changes": args.changes,
        "inventory": args.inventory,
        "probe_ms": args.probe_ms,
        "probe_delay_ms": args.probe_delay_ms,
        "gap": args.gap,
        "udhcpc_gap": args.udhcpc_gap,
        "machine": dhcp_lab.machine(),
        "command": " ".join(["bench/pair_served_latency.py", *sys.argv[1:]]),
        "wall_seconds": time.monotonic() - started,
        "runs": runs,
    }


# --- the report -----------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def summary_line(r: dict[str, Any]) -> str:
    parts = []
    for name in PHASES:
        q = quantiles([x["served"] for x in r[name]])
        parts.append(f"{name} p50 {ms(q['p50'])} p99 {ms(q['p99'])} max {ms(q['max'])}")
    return "; ".join(parts)


def table_rows(runs: list[dict[str, Any]]) -> list[str]:
    rows = []
    groups: list[tuple[str, list[dict[str, Any]]]] = [(str(r["run"]), [r]) for r in runs]
    if len(runs) > 1:
        groups.append(("all", runs))
    for label, members in groups:
        for name in PHASES:
            # (the run's primary and secondary addresses, one change): each run has its own
            pairs = [(r["primary"], r["secondary"], x) for r in members for x in r[name]]
            results = [x for _, _, x in pairs]
            q = quantiles([x["served"] for x in results])
            placed = {
                role: quantiles([x["in_place"][role] for x in results if role in x["in_place"]])
                for role in ("primary", "secondary")
            }
            offered = quantiles([x["by_server"][s] for _, s, x in pairs
                                 if s in x.get("by_server", {})])  # fmt: skip
            firsts: dict[str, int] = {}
            for p, _, x in pairs:
                who = "p" if x["server"] == p else "s"
                firsts[who] = firsts.get(who, 0) + 1
            both_offered = sum(1 for x in results if len(x["servers"]) > 1)
            pool = sum(1 for x in results if x["other_offers_before"])
            loads = [r["load"][PHASES.index(name)] for r in members]
            rows.append(
                f"| {label} | {name} | {q['n']} | **{ms(q['p50'])}** | {ms(q['p90'])} |"
                f" **{ms(q['p99'])}** | {ms(q['max'])} | {ms(offered.get('p50'))}"
                f" ({offered['n']}) | {ms(placed['primary'].get('p50'))} /"
                f" {ms(placed['secondary'].get('p50'))} |"
                f" {firsts.get('p', 0)}/{firsts.get('s', 0)} | {both_offered} | {pool} |"
                f" {', '.join(f'{x:.1f}' for x in loads)} |"
            )
    return rows


def report(run: dict[str, Any]) -> None:
    print(
        f"\n{run['server']} pair, {run['inventory']} reservations in the inventory,"
        f" {run['changes']} changes per phase, probe every {run['probe_ms']} ms;"
        f" machine: {run['machine']}; wall time {run['wall_seconds'] / 60:.1f} min"
    )
    print(f"command: {run['command']}")
    first = run["runs"][0]
    print(f"timers in the row: {first['timers']}")
    for r in run["runs"]:
        print(
            f"run {r['run']}: pair ready in {r['setup_seconds']:.1f} s; after the SIGKILL the"
            f" survivor was {SURVIVOR_STATE[run['server']]} at {r['state_after']:.2f} s and"
            f" offered an inventory reservation at {r['answers_after']:.2f} s"
            f" (probe started at its state); run wall time {r['wall_seconds']:.0f} s"
        )
    print(
        "\ncommit to the first DHCPOFFER of the reserved address; the secondary's first"
        " offer of it (and in how many changes it offered it); 'in place': the reservation"
        " where each peer reads it (ISC: its dhcpd.conf, written after the OMAPI update; Kea:"
        " its hosts table); first offer by p(rimary)/s(econdary); 'both offered': changes"
        " whose address both peers offered; 'pool offers first': changes offered another"
        " address before it; load: 1-min load average at the phase's start\n"
    )
    print(
        "| run | phase | n | p50 | p90 | p99 | max | secondary's offer p50 (n) |"
        " in place p50 p / s | first offer p/s | both offered | pool offers first | load |"
    )
    print("| --- | --- |" + " ---: |" * 11)
    for row in table_rows(run["runs"]):
        print(row)
    commits = [x["commit_duration"] for r in run["runs"] for name in PHASES for x in r[name]]
    print(f"\nCOMMIT itself: p50 {ms(dhcp_lab.percentile(commits, 0.5))} (included)")
    for r in run["runs"]:
        for name in PHASES:
            slow = sorted(r[name], key=lambda x: -x["served"])[:3]
            print(
                f"run {r['run']} {name}, slowest: "
                + "; ".join(
                    f"{ms(x['served'])} (in place {ms(max(x['in_place'].values()))},"
                    f" {x['sent_before']} DISCOVERs before, other offers"
                    f" {x['other_offers'][:2]})"
                    for x in slow
                )
            )
    for r in run["runs"]:
        for u in r.get("udhcpc", []):
            print(
                f"\nrun {r['run']} udhcpc change {u['mac']} -> {u['ip']}: bound after"
                f" {ms(u['served'])} from {u['server']},"
                f" {sum(1 for f in u['frames'] if f[1] == 'NAK')} NAK; in the survivor's"
                f" {'hosts table' if run['server'] == 'kea' else 'dhcpd.conf'} at"
                f" {ms(u.get('in_place'))}; udhcpc runs: "
                + ", ".join(
                    f"[{a['started']:.3f}+{a['took']:.3f} s: {a['address']} from {a['server']}]"
                    for a in u["attempts"]
                )
            )
            print("  frames (s after the commit): " + ", ".join(
                f"{t:+.3f} {kind}{'/' + s if s else ''}" for t, kind, s in u["frames"]
            ))  # fmt: skip
            for t, text in u["kea_log"]:
                print(f"  kea {t:+.3f} {kea_short(text)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("isc", "kea"), default="isc")
    parser.add_argument("--runs", type=int, default=2, help="pairs built, one after the other")
    parser.add_argument("--changes", type=int, default=CHANGES, help="changes per phase")
    parser.add_argument(
        "--inventory", type=int, default=INVENTORY, help="reserved hosts before the changes"
    )
    parser.add_argument(
        "--probe-ms", type=float, default=PROBE_MS, help="milliseconds between two DISCOVERs"
    )
    parser.add_argument(
        "--probe-delay-ms",
        type=float,
        default=0.0,
        help="the probe's first DISCOVER of a change this long after the COMMIT (default 0:"
        " the new MAC asks from the commit on, before its reservation exists)",
    )
    parser.add_argument(
        "--udhcpc",
        type=int,
        default=0,
        metavar="K",
        help="K more changes in the survivor phase, timed with udhcpc runs as the e2e tests"
        " do, every frame captured",
    )
    parser.add_argument(
        "--gap",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=GAP,
        help="seconds from a change in place on every live peer to the next commit"
        f" (default {GAP[0]}-{GAP[1]}: past the relay's 0.5 s linger, when it polls every"
        " 100 ms, and the generators' coalescing window, 1 s in the Kea pair)",
    )
    parser.add_argument(
        "--udhcpc-gap",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="seconds between two --udhcpc changes (default: --gap's; shorter than the"
        " generator's window, each change waits it out and lands at a random moment of"
        " udhcpc's exchanges)",
    )
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    parser.add_argument("--from-json", type=Path, help="report a saved --json run")
    parser.add_argument("--logs", type=Path, help="keep each peer's server and generator log here")
    args = parser.parse_args(argv)
    args.gap = tuple(args.gap)
    args.udhcpc_gap = tuple(args.udhcpc_gap or args.gap)
    room = LAST_HOST - FIRST_CHANGE + 1
    if args.inventory < 1 or args.changes < 1 or args.udhcpc < 0:
        parser.error("--inventory and --changes must be positive")
    if args.inventory + 2 * args.changes + args.udhcpc > room:
        parser.error(f"--inventory + 2 x --changes + --udhcpc must be at most {room}")
    run = dhcp_lab.run_or_load(args, measure)
    if run is None:
        return 2
    report(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
