#!/usr/bin/env python3
"""Failover takeover: how long a DHCP pair stops answering when its primary dies.

A pair is built from the machine database exactly as the end-to-end tests build theirs
(tests/e2e/test_failover_isc.py, tests/e2e/test_failover_kea.py): PostgreSQL (fsync on)
and ActiveMQ from scripts/services.py, the subnet, both ``dhcp_server`` rows and the
``dhcp_failover`` row written with psql, the installed ``cdc-relay``, and one
``dhcp-generator --server NAME`` per server (its own consumer queue) writing that
server's config: two ISC dhcpd (``isc-failover``, OMAPI for host changes) or two
kea-dhcp4 with their kea-ctrl-agent (``kea-hot-standby``, each with its own Kea hosts
database), in two server namespaces on one bridge (tests/e2e/segment.py). Needs root.

ISC's ``perfdhcp`` (Debian's kea-admin) runs in the client namespace on the bridge at
``--rate`` DORA exchanges a second, each from one of ``--clients`` MACs picked at random
(``-M``): ``pool`` MACs have no reservation (pool leases, the load-balanced half of
ISC failover), ``reserved`` MACs each have a host row. A warm-up run gives every MAC its
lease first, so the measured run sees renewals, not first allocations (dhcpd pings an
address before its first allocation). perfdhcp acts as a relay (giaddr: its address on
the bridge; the servers answer it by unicast). perfdhcp sends ``secs`` 0; with
``--secs`` it counts up from the loss (``-Y``/``-y``), as a client's does while it gets
no answer. In the measured run the primary is lost ``--kill-at`` seconds in:

* kill: SIGKILL of the primary's generator, then its DHCP server (the moment measured),
  then (Kea) its kea-ctrl-agent: the kernel closes the server's connections at once;
* silent: the primary's segment link is set down first (the moment measured), then the
  same kills: its peer is told nothing, as when a machine loses power.

An AF_PACKET socket on the client's interface sees every DISCOVER, REQUEST and answer,
with the kernel's receive time; an answer matches its request by xid and kind within
perfdhcp's drop time (1 s), and the DHCP server identifier says which server answered.
Per 100 ms window from the loss: DISCOVERs sent and answered, by server. The survivor's
failover state is followed meanwhile (ISC: OMAPI ``failover-state`` every 100 ms over
its control link; Kea: the HA_STATE_TRANSITION lines of its log).

Timer profiles (``--timers``): ``test`` is the end-to-end tests' (ISC: MCLT 10 s,
max-response-delay 5 s; Kea: heartbeat 1 s, max-response-delay 3 s, max-ack-delay 1 s,
max-unacked-clients 0); ``default`` leaves the row's columns to the migration's
defaults, the servers' documented ones (ISC: MCLT 3600 s, max-response-delay 60 s; Kea:
heartbeat 10 s, max-response-delay 60 s, max-ack-delay 5 s, max-unacked-clients 5).

    .venv/bin/python bench/failover_takeover.py [--server isc|kea] [--runs 3]
        [--loss kill|silent] [--timers test|default] [--clients-kind pool|reserved]
        [--secs] [--rate 50] [--clients 40] [--seconds 25] [--kill-at 8] [--json FILE]

docs/benchmarks.md ("Failover takeover") has the figures and what they mean.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dhcp_availability  # bench/dhcp_availability.py: the perfdhcp command and its figures
import dhcp_lab  # bench/dhcp_lab.py: services, the Kea hosts database, the machine line
import dhcpd_restart  # bench/dhcpd_restart.py: setns for sockets in a namespace
import psycopg
import services  # scripts/services.py (on the path through dhcp_lab)

from tests.e2e import netns, pipeline, segment
from tests.e2e import test_failover_isc as isc_e2e
from tests.e2e import test_failover_kea as kea_e2e
from tests.integration import kea_hosts_support as khs

WINDOW = 0.1  # seconds, the width of one window
DROP_TIME = 1.0  # seconds: perfdhcp's drop time, after which an exchange counts as lost
PERFDHCP_GRACE = 30.0  # seconds past its test period before perfdhcp is given up on
WARM_UP = 10  # seconds of perfdhcp before each measured run
CAPTURE_TAIL = 1.5  # seconds the capture goes on after perfdhcp exits
READY_DEADLINE = 90.0  # seconds from the generators' start until the pair serves its roles
STATE_POLL = 0.1  # seconds between two looks at the ISC survivor's failover state
SUBNET = "takeover"
PREFIX = 23  # the segment: room for the reserved MACs (hosts 10..) and the pool
RESERVED_BASE = 10  # host number of the first reserved MAC
POOL = (256, 500)  # host numbers of the dynamic range
LEASE_TIME = 600  # seconds
GENERATOR_WINDOW = 0.1  # seconds, the generators' coalescing window (as the e2e tests)

TIMERS = {
    ("isc", "test"): {"mclt": 10, "max_response_delay": 5},
    ("isc", "default"): {},
    ("kea", "test"): {
        "heartbeat_delay_ms": 1000,
        "max_response_delay_ms": 3000,
        "max_ack_delay_ms": 1000,
        "max_unacked_clients": 0,
    },
    ("kea", "default"): {},
}
TIMER_COLUMNS = {
    "isc": ("mclt", "max_response_delay", "max_unacked_updates", "load_balance_max_seconds",
            "split"),
    "kea": ("heartbeat_delay_ms", "max_response_delay_ms", "max_ack_delay_ms",
            "max_unacked_clients"),
}  # fmt: skip

# DHCP message types
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
ANSWERS = {DISCOVER: (OFFER,), REQUEST: (ACK, NAK)}
ETH_P_ALL = 0x0003  # a socket for one protocol is not given the outgoing frames
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h>; the control message has the same number
_KEA_TRANSITION = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*HA_STATE_TRANSITION .*"
    r"from (?P<old>[A-Z-]+) to (?P<new>[A-Z-]+) state"
)


# --- pure parts: frames, exchanges, windows ----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Packet:
    """One DHCP message seen on the client's interface."""

    at: float  # seconds since the epoch (the kernel's receive time)
    kind: int  # DHCP message type (option 53)
    xid: int
    mac: str
    server: str | None  # the server identifier (option 54)
    secs: int = 0  # the client's seconds since it began (a server's load-balancing input)


def decode(frame: bytes, at: float) -> Packet | None:
    """The DHCP message in an Ethernet frame (IPv4, UDP 67/68), or None."""
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != 17:  # UDP
        return None
    udp = 14 + ihl
    if len(frame) < udp + 8:
        return None
    sport, dport = struct.unpack("!HH", frame[udp : udp + 4])
    # a client talks 68 -> 67; perfdhcp acts as a relay (giaddr set): 67 -> 67 both ways
    if not {sport, dport} <= {67, 68}:
        return None
    bootp = frame[udp + 8 :]
    if len(bootp) < 240 or bootp[236:240] != b"\x63\x82\x53\x63":
        return None
    xid, secs = struct.unpack("!IH", bootp[4:10])
    hlen = min(bootp[2], 16)
    mac = ":".join(f"{b:02x}" for b in bootp[28 : 28 + hlen])
    kind, server = dhcp_lab.dhcp_options(bootp)
    if kind is None:
        return None
    return Packet(at=at, kind=kind, xid=xid, mac=mac, server=server, secs=secs)


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """A DISCOVER or REQUEST the client sent, and the answers it got within the drop time."""

    sent: float
    kind: int
    xid: int
    mac: str
    answers: tuple[tuple[float, str | None], ...] = ()  # (arrival, server identifier)
    secs: int = 0

    @property
    def answered(self) -> bool:
        return bool(self.answers)

    @property
    def servers(self) -> frozenset[str | None]:
        return frozenset(server for _, server in self.answers)


def exchanges(packets: Iterable[Packet], drop_time: float = DROP_TIME) -> list[Exchange]:
    """Each DISCOVER and REQUEST, with the answers of the right kind and xid that came
    within ``drop_time`` (a late answer is a lost exchange, as perfdhcp counts it)."""
    ordered = sorted(packets, key=lambda p: p.at)
    open_: dict[tuple[int, int], list[Any]] = {}  # (kind, xid) -> [packet, answers]
    found: list[list[Any]] = []
    for packet in ordered:
        if packet.kind in ANSWERS:
            entry: list[Any] = [packet, []]
            open_[(packet.kind, packet.xid)] = entry
            found.append(entry)
            continue
        for asked, replies in ANSWERS.items():
            if packet.kind not in replies:
                continue
            entry = open_.get((asked, packet.xid))
            if entry is not None and packet.at - entry[0].at <= drop_time:
                entry[1].append((packet.at, packet.server))
    return [
        Exchange(sent=p.at, kind=p.kind, xid=p.xid, mac=p.mac, answers=tuple(answers), secs=p.secs)
        for p, answers in found
    ]


@dataclass(frozen=True, kw_only=True)
class Window:
    """The DISCOVERs sent in [start, start + WINDOW) (start relative to the loss)."""

    start: float
    sent: int
    answered: int
    by_server: dict[str, int]


def windows(
    found: Sequence[Exchange], *, loss: float, end: float, width: float = WINDOW
) -> list[Window]:
    """Windows aligned on the loss (one starts at it), from the first DISCOVER to ``end``
    (the last moment whose DISCOVERs had their whole drop time inside the capture)."""
    discovers = [e for e in found if e.kind == DISCOVER and e.sent <= end]
    if not discovers:
        return []
    first = math.floor((discovers[0].sent - loss) / width)
    last = math.floor((end - loss) / width)
    bins: dict[int, list[Exchange]] = {i: [] for i in range(first, last + 1)}
    for e in discovers:
        bins.setdefault(math.floor((e.sent - loss) / width), []).append(e)
    result = []
    for i in sorted(bins):
        by_server: dict[str, int] = {}
        for e in bins[i]:
            for server in e.servers:
                by_server[str(server)] = by_server.get(str(server), 0) + 1
        answered = sum(1 for e in bins[i] if e.answered)
        window = Window(
            start=round(i * width, 6), sent=len(bins[i]), answered=answered, by_server=by_server
        )
        result.append(window)
    return result


def takeover(
    found: Sequence[Exchange],
    *,
    loss: float,
    end: float,
    primary: str,
    secondary: str,
    width: float = WINDOW,
) -> dict[str, Any]:
    """The figures of one run: gaps (seconds after the loss), unanswered exchanges before
    and after it, and who answered. ``end``: exchanges sent later are undecided."""
    decided = [e for e in found if e.sent <= end]
    discovers = [e for e in decided if e.kind == DISCOVER]
    before = [e for e in discovers if e.sent < loss]
    after = [e for e in discovers if e.sent >= loss]
    # the MACs only the primary answered before the loss: its half of the load balancing
    # (ISC, pool MACs), or every MAC (Kea hot-standby)
    answered_by: dict[str, set[str | None]] = {}
    for e in before:
        answered_by.setdefault(e.mac, set()).update(e.servers)
    primary_macs = {mac for mac, servers in answered_by.items() if servers == {primary}}
    bins = windows(found, loss=loss, end=end, width=width)
    first_window = next((w.start for w in bins if w.start >= 0 and w.answered), None)
    first_any = next((e.sent - loss for e in after if e.answered), None)
    # answered by the survivor (a DISCOVER sent at the loss may still reach the primary)
    first_primary = next(
        (e.sent - loss for e in after if e.mac in primary_macs and e.servers - {primary}),
        None,
    )
    unanswered_after = [e for e in after if not e.answered]
    requests = [e for e in decided if e.kind == REQUEST]

    def count_servers(items: Iterable[Exchange]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in items:
            for server in e.servers:
                counts[str(server)] = counts.get(str(server), 0) + 1
        return counts

    return {
        "gap_window": first_window,
        "gap_any": first_any,
        "gap_primary_clients": first_primary,
        # every DISCOVER sent after this one was answered
        "last_unanswered": (unanswered_after[-1].sent - loss) if unanswered_after else None,
        "sent_before": len(before),
        "unanswered_before": sum(1 for e in before if not e.answered),
        "silent_windows_before": sum(1 for w in bins if w.start < 0 and w.sent and not w.answered),
        "sent_after": len(after),
        "unanswered_after": len(unanswered_after),
        "unanswered_after_primary_clients": sum(
            1 for e in unanswered_after if e.mac in primary_macs
        ),
        "primary_clients": len(primary_macs),
        "clients_by_server_before": {
            "primary": len(primary_macs),
            "secondary": sum(1 for servers in answered_by.values() if servers == {secondary}),
            "both": sum(1 for servers in answered_by.values() if servers == {primary, secondary}),
        },
        "clients_seen": len(answered_by),
        "requests_unanswered_after": sum(1 for e in requests if e.sent >= loss and not e.answered),
        "answers_before": count_servers(before),
        "answers_after": count_servers(after),
        "secs_max_after": max((e.secs for e in after), default=0),
        "windows": [asdict(w) for w in bins],
    }


def kea_transitions(log: str, *, after: float) -> list[tuple[float, str, str]]:
    """(epoch seconds, from, to) of each HA state transition Kea logged (local time)."""
    found = []
    for line in log.splitlines():
        match = _KEA_TRANSITION.match(line)
        if match is None:
            continue
        at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if at >= after:
            found.append((at, match["old"], match["new"]))
    return found


def macs(count: int, seed: int) -> list[str]:
    """``count`` distinct locally administered MACs of one run."""
    return [f"02:5e:{seed & 0xFF:02x}:00:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(count)]


# --- the capture ----------------------------------------------------------------------


class Capture:
    """Every DHCP frame on ``dev`` of namespace ``ns``, with the kernel's time stamp. It
    goes on across the link's down and up (udhcpc's runs set the client's MAC with the
    link down: a read then fails with ENETDOWN), counting those failed reads."""

    def __init__(self, ns: str, dev: str) -> None:
        with dhcpd_restart.in_namespace(ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((dev, ETH_P_ALL))
        sock.settimeout(0.2)
        self.sock = sock
        self.packets: list[Packet] = []
        self.link_errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                frame, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.EAGAIN) and not self.stop.is_set():
                    self.link_errors += 1
                    continue
                return
            at = time.time()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", data[:16])
                    at = seconds + nanoseconds / 1e9
            packet = decode(frame, at)
            if packet is not None:
                self.packets.append(packet)

    def close(self) -> list[Packet]:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        return list(self.packets)


# --- the pair -------------------------------------------------------------------------


@dataclass
class Lab:
    """One pair on one segment, its pipeline, and how to lose its primary."""

    server: str
    seg: segment.Segment
    db_url: str
    clients: list[str]
    primary: str  # the primary's segment address (its server identifier)
    secondary: str
    workdir: Path
    kill: dict[str, Any] = field(default_factory=dict)  # what to SIGKILL on loss
    states: list[tuple[float, str]] = field(default_factory=list)  # (epoch s, state)
    rendered_timers: dict[str, Any] = field(default_factory=dict)


def pair_sql(
    lab: Lab, *, pair: str, names: tuple[str, str], mode: str, timers: dict[str, int],
    port: int | None,
) -> str:  # fmt: skip
    """The subnet, both servers serving it, the pair row (the e2e tests' statements, with
    this bench's pool and the timers given; absent timers take the column defaults)."""
    seg = lab.seg
    start, end = (seg.host(n) for n in POOL)
    columns = ["name", "mode", "primary_server_id", "secondary_server_id",
               "primary_address", "secondary_address"]  # fmt: skip
    values = [f"'{pair}'", f"'{mode}'", "p.id", "s.id", f"'{lab.primary}'",
              f"'{lab.secondary}'"]  # fmt: skip
    if port is not None:
        columns += ["primary_port", "secondary_port"]
        values += [str(port), str(port)]
    for name, value in timers.items():
        columns.append(name)
        values.append(str(value))
    return f"""
        INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time)
            VALUES ('{SUBNET}', '{seg.network}', '{seg.host(511 - 2)}', '{start}', '{end}',
                    {LEASE_TIME});
        INSERT INTO dhcp_server (name) VALUES ('{names[0]}'), ('{names[1]}');
        INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id)
            SELECT s.id, n.id FROM dhcp_server s, subnet n WHERE n.name = '{SUBNET}';
        INSERT INTO dhcp_failover ({", ".join(columns)})
            SELECT {", ".join(values)}
            FROM dhcp_server p, dhcp_server s
            WHERE p.name = '{names[0]}' AND s.name = '{names[1]}';
    """


def hosts_sql(seg: segment.Segment, clients: list[str]) -> str:
    rows = ", ".join(f"('fo-host-{i}')" for i in range(len(clients)))
    pairs = ", ".join(
        f"('fo-host-{i}', '{mac}'::macaddr, '{seg.host(RESERVED_BASE + i)}'::inet)"
        for i, mac in enumerate(clients)
    )
    return f"""
        INSERT INTO host (hostname) VALUES {rows};
        INSERT INTO interface (host_id, mac, ip)
            SELECT h.id, v.mac, v.ip FROM (VALUES {pairs}) AS v (hostname, mac, ip)
            JOIN host h ON h.hostname = v.hostname;
    """


def timers_of(db_url: str, server: str) -> dict[str, Any]:
    columns = ", ".join(TIMER_COLUMNS[server])
    done = subprocess.run(
        ["psql", "-X", "-A", "-t", "-F", " ", "-d", db_url, "-c",
         f"SELECT {columns} FROM dhcp_failover"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return dict(zip(TIMER_COLUMNS[server], map(int, done.stdout.split()), strict=True))


@contextlib.contextmanager
def isc_pair(
    lab: Lab, stack: contextlib.ExitStack, stomp: str, timers: dict[str, int]
) -> Iterator[None]:
    """Two dhcpd and their generators, as test_failover_isc's ``pair`` fixture; both
    peers normal on exit of the setup."""
    sides = []
    for label, view in zip("ab", lab.seg.servers, strict=True):
        side_dir = lab.workdir / label
        side_dir.mkdir()
        key, key_file = pipeline.omapi_key_file(side_dir, isc_e2e.KEY_NAME)
        server = stack.enter_context(
            netns.isc_dhcpd(view, side_dir / "dhcpd.conf", side_dir, start=False)
        )
        sides.append(
            isc_e2e.Side(
                name=f"dhcp-{label}", view=view, workdir=side_dir, server=server,
                key_secret=key.secret, key_file=key_file,
                consumer=f"fo{label}{uuid.uuid4().hex[:8]}",
            )
        )  # fmt: skip
    a, b = sides
    # the pair's name is the e2e test's: Side.failover_state asks for it by that name
    sql = pair_sql(
        lab, pair=isc_e2e.PAIR, names=(a.name, b.name), mode="isc-failover", timers=timers,
        port=None,
    )  # fmt: skip
    if lab.kill.get("reserved"):
        sql += hosts_sql(lab.seg, lab.clients)
    pipeline.psql(lab.db_url, sql)
    destination = f"/topic/VirtualTopic.fo{uuid.uuid4().hex[:10]}"
    env = {"database_url": lab.db_url, "stomp_url": stomp, "destination": destination}
    stack.enter_context(pipeline.relay(**env, log=lab.workdir / "relay.log"))
    generators = {}
    for side in sides:
        side.metrics_port = services.free_port()
        args = [
            *pipeline.isc_args(side.server),
            "--server", side.name, "--consumer", side.consumer,
            "--omapi", f"{side.view.control_ip}:{isc_e2e.OMAPI_PORT}",
            "--omapi-key-file", str(side.key_file),
            "--metrics-port", str(side.metrics_port), "--window", str(GENERATOR_WINDOW),
        ]  # fmt: skip
        generators[side.name] = stack.enter_context(
            pipeline.generator(
                **env, consumer=side.consumer, args=args, log=side.workdir / "generator.log"
            )
        )
    normal = ("normal", "normal")
    netns.wait_until(
        lambda: all(s.failover_state() == normal == s.lease_file_state() for s in sides),
        READY_DEADLINE,
        "both dhcpd peers normal",
    )
    lab.kill = {**lab.kill, "generator": generators[a.name].process, "dhcpd": a,
                "view": a.view, "survivor": b}  # fmt: skip
    yield


@contextlib.contextmanager
def kea_pair(
    lab: Lab,
    stack: contextlib.ExitStack,
    stomp: str,
    timers: dict[str, int],
    cluster: services.PostgresCluster,
) -> Iterator[None]:
    """Two kea-dhcp4 with their agents and generators, as test_failover_kea's test does;
    both in hot-standby (the primary serving) on exit of the setup."""
    sides = []
    for name, link in zip(kea_e2e.SERVERS, lab.seg.servers, strict=True):
        (lab.workdir / name).mkdir()
        writer, reader = dhcp_lab.kea_hosts_database(cluster)
        sides.append(
            kea_e2e.Side(
                name=name, link=link, workdir=lab.workdir / name, writer=writer, reader=reader,
                consumer=f"foha{uuid.uuid4().hex[:8]}{name[-1]}",
            )
        )  # fmt: skip
    primary, standby = sides
    sql = pair_sql(
        lab, pair=kea_e2e.PAIR, names=(primary.name, standby.name), mode="kea-hot-standby",
        timers=timers, port=kea_e2e.AGENT_PORT,
    )  # fmt: skip
    if lab.kill.get("reserved"):
        sql += hosts_sql(lab.seg, lab.clients)
    pipeline.psql(lab.db_url, sql)
    destination = f"/topic/VirtualTopic.fo{uuid.uuid4().hex[:10]}"
    env = {"database_url": lab.db_url, "stomp_url": stomp, "destination": destination}
    stack.enter_context(pipeline.relay(**env, log=lab.workdir / "relay.log"))
    kea: dict[str, netns.KeaServer] = {}
    agents: dict[str, kea_e2e.Agent] = {}
    generators: dict[str, pipeline.Daemon] = {}
    for side in sides:
        paths = netns.kea_paths(side.workdir)
        paths["conf"].write_text(kea_e2e.bootstrap_conf(side.workdir))
        kea[side.name] = stack.enter_context(netns.kea_dhcp4(side.link, side.workdir))
        kea_e2e.render_agent_conf(side, lab.db_url)
        agents[side.name] = stack.enter_context(kea_e2e.ctrl_agent(side))
        generators[side.name] = stack.enter_context(
            pipeline.generator(
                **env, consumer=side.consumer, args=side.generator_args(),
                log=side.workdir / "generator.log",
            )
        )  # fmt: skip
    wanted = len(lab.clients) if lab.kill.get("reserved") else 0

    def ready() -> bool:
        serving = kea_e2e.ha_state(primary) == ("hot-standby", [primary.name])
        roles = serving and kea_e2e.ha_state(standby) == ("hot-standby", [])
        return roles and all(len(khs.table_rows(s.writer)) >= wanted for s in sides)

    netns.wait_until(ready, READY_DEADLINE, "both Kea servers in hot-standby, primary serving")
    lab.kill = {
        **lab.kill,
        "generator": generators[primary.name].process,
        "kea": kea[primary.name].process,
        "agent": agents[primary.name].process,
        "view": primary.link,
        "survivor_log": netns.kea_paths(standby.workdir)["log"],
    }
    yield


def lose_primary(lab: Lab, loss: str) -> float:
    """Lose the primary; the moment (epoch seconds) of the link cut or the server's kill."""
    kill = lab.kill
    view = kill["view"]
    moment = None
    if loss == "silent":
        netns._ip("-n", view.server_ns, "link", "set", view.server_if, "down")
        moment = time.time()  # the link is down: nothing the primary sends arrives
    kill["generator"].kill()
    kill["generator"].wait()
    if lab.server == "isc":
        pid = kill["dhcpd"].server.pid()
        moment = moment or time.time()
        os.kill(pid, signal.SIGKILL)
    else:
        moment = moment or time.time()
        kea_e2e.sigkill(kill["kea"])
        kea_e2e.sigkill(kill["agent"])
    return moment


class IscStates:
    """The ISC survivor's (local, partner) failover state, asked every STATE_POLL."""

    def __init__(self, side: isc_e2e.Side) -> None:
        self.side = side
        self.seen: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = None
        while not self.stop.wait(STATE_POLL):
            state = self.side.failover_state()
            if state is not None and state != last:
                self.seen.append((time.time(), "/".join(state)))
                last = state

    def close(self) -> list[tuple[float, str]]:
        self.stop.set()
        self.thread.join(5)
        return self.seen


# --- one run --------------------------------------------------------------------------


def perfdhcp(lab: Lab, args: argparse.Namespace, seconds: int, mac_file: Path) -> list[str]:
    cmd = dhcp_availability.perfdhcp_command(
        lab.seg.servers[0], rate=args.rate, seconds=seconds, clients=len(lab.clients)
    )
    cmd += ["-M", str(mac_file)]
    if args.secs and seconds == args.seconds:
        # from the loss on, secs = seconds since -Y + 1: clients that get no answer
        cmd += ["-Y", str(int(args.kill_at)), "-y", str(args.seconds)]
    return cmd


def run_once(
    args: argparse.Namespace, cluster: services.PostgresCluster, stomp: str, n: int
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mdb-fo-"))
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            seg = stack.enter_context(segment.segment(servers=2, prefixlen=PREFIX))
            dhcp_lab.client_address(seg.servers[0])  # perfdhcp needs one on its interface
            name = f"takeover_{uuid.uuid4().hex[:8]}"
            db_url = _database(cluster, name)
            lab = Lab(
                server=args.server, seg=seg, db_url=db_url,
                clients=macs(args.clients, n), primary=str(seg.servers[0].server_ip),
                secondary=str(seg.servers[1].server_ip), workdir=work,
                kill={"reserved": args.clients_kind == "reserved"},
            )  # fmt: skip
            timers = TIMERS[(args.server, args.timers)]
            if args.server == "isc":
                stack.enter_context(isc_pair(lab, stack, stomp, timers))
            else:
                stack.enter_context(kea_pair(lab, stack, stomp, timers, cluster))
            lab.rendered_timers = timers_of(db_url, args.server)
            ready = time.monotonic() - started
            mac_file = work / "macs"
            mac_file.write_text("\n".join(lab.clients) + "\n")
            warm = subprocess.run(
                perfdhcp(lab, args, WARM_UP, mac_file), capture_output=True, text=True,
                timeout=WARM_UP + PERFDHCP_GRACE, check=False,
            )  # fmt: skip
            load = os.getloadavg()
            ha_log: list[str] = []  # Kea: the survivor's HA log lines
            capture = Capture(seg.client_ns, seg.client_if)
            states = IscStates(lab.kill["survivor"]) if args.server == "isc" else None
            cmd = perfdhcp(lab, args, args.seconds, mac_file)
            perf = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            perf_start = time.time()
            try:
                time.sleep(max(0.0, perf_start + args.kill_at - time.time()))
                loss = lose_primary(lab, args.loss)
                try:
                    output, _ = perf.communicate(timeout=args.seconds + PERFDHCP_GRACE)
                except subprocess.TimeoutExpired:
                    perf.kill()
                    output, _ = perf.communicate()
                time.sleep(CAPTURE_TAIL)
            finally:
                packets = capture.close()
                seen_states = states.close() if states is not None else []
            if args.server == "kea":
                log = lab.kill["survivor_log"].read_text(errors="replace")
                seen_states = [
                    (at, f"{old}->{new}")
                    for at, old, new in kea_transitions(log, after=perf_start - 5)
                ]
                ha_log = [line for line in log.splitlines() if " HA_" in line][-40:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = exchanges(packets)
    end = max(p.at for p in packets) - DROP_TIME if packets else loss
    figures = takeover(found, loss=loss, end=end, primary=lab.primary, secondary=lab.secondary)
    return {
        "run": n,
        "setup_seconds": ready,
        "load_before": load,
        "timers": lab.rendered_timers,
        "primary": lab.primary,
        "secondary": lab.secondary,
        "kill_at": loss - perf_start,
        "states": [(at - loss, state) for at, state in seen_states],
        "perfdhcp": dhcp_availability.parse(output),
        "perfdhcp_exit": perf.returncode,
        "warm_up": dhcp_availability.parse(warm.stdout),
        "command": " ".join(cmd),
        "packets": len(packets),
        "survivor_ha_log": ha_log,
        "output": output[-3000:],
        "warm_up_output": warm.stdout[-1500:] + warm.stderr[-500:],
        **figures,
    }


def _database(cluster: services.PostgresCluster, name: str) -> str:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = cluster.url(name)
    services.migrate(url)
    return url


def pair_available(args: argparse.Namespace) -> bool:
    """Whether this machine can build ``args.server``'s pair; if not, says what it needs."""
    ok, missing = netns.available()
    have = netns.have_kea() and Path(kea_e2e.KEA_CTRL_AGENT).exists()
    have = have if args.server == "kea" else netns.have_dhcpd()
    if not ok or not have or not pipeline.have_commands():
        print(f"needs root, ip netns, {args.server}'s server and the commands ({missing})")
        return False
    return True


def pair_runs(
    args: argparse.Namespace,
    run_once: Callable[[argparse.Namespace, services.PostgresCluster, str, int], dict[str, Any]],
    summary: Callable[[dict[str, Any]], str],
    *,
    prefix: str,
    building: str,
) -> list[dict[str, Any]]:
    """``args.runs`` runs of ``run_once``, each on its own pair, under one PostgreSQL and
    ActiveMQ (state in a temporary directory named ``prefix``...); says on stderr that
    it is ``building`` a run's pair, then the run's ``summary``."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    runs = []
    try:
        with dhcp_lab.services_up(state) as (cluster, stomp):
            for n in range(1, args.runs + 1):
                print(f"run {n}: {building}", file=sys.stderr)
                runs.append(run_once(args, cluster, stomp, n))
                print(f"run {n}: {summary(runs[-1])}", file=sys.stderr)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return runs


def measure(args: argparse.Namespace) -> dict[str, Any] | None:
    if not pair_available(args):
        return None
    if not Path(dhcp_availability.PERFDHCP).exists():
        print(f"needs {dhcp_availability.PERFDHCP} (Debian package kea-admin)")
        return None
    started = time.monotonic()
    runs = pair_runs(
        args, run_once, summary_line, prefix="mdb-fo-svc-", building="building the pair"
    )
    return {
        "server": args.server,
        "loss": args.loss,
        "timers": args.timers,
        "clients_kind": args.clients_kind,
        "rate": args.rate,
        "clients": args.clients,
        "seconds": args.seconds,
        "secs": args.secs,
        "machine": dhcp_lab.machine(),
        "wall_seconds": time.monotonic() - started,
        "runs": runs,
    }


# --- the report -----------------------------------------------------------------------


def fmt(value: float | None, none: str = "never") -> str:
    return none if value is None else f"{value:.2f} s"


def summary_line(r: dict[str, Any]) -> str:
    return (
        f"gap {fmt(r['gap_window'])} (primary's clients {fmt(r['gap_primary_clients'])}),"
        f" last unanswered {fmt(r['last_unanswered'], 'none')}, unanswered after the loss"
        f" {r['unanswered_after']}/{r['sent_after']}, before {r['unanswered_before']}"
        f"/{r['sent_before']}"
    )


def timeline(r: dict[str, Any], primary: str, secondary: str, *, after: float = 2.0) -> str:
    """One character per window from 1 s before the loss to ``after`` s past the last
    unanswered one: '#' all answered, '+' some, '.' none, ' ' nothing sent; and who."""
    horizon = max(r["last_unanswered"] or 0.0, r["gap_window"] or 0.0) + after
    shown = [w for w in r["windows"] if -1.0 <= w["start"] < horizon]
    marks, who = [], []
    for w in shown:
        if not w["sent"]:
            marks.append(" ")
        elif w["answered"] == w["sent"]:
            marks.append("#")
        else:
            marks.append("+" if w["answered"] else ".")
        servers = set(w["by_server"])
        who.append(
            "B" if servers == {primary, secondary} else
            "p" if servers == {primary} else "s" if servers == {secondary} else " "
        )  # fmt: skip
    return "".join(marks) + "\n" + "".join(who)


def report(run: dict[str, Any]) -> None:
    print(
        f"\n{run['server']} pair, loss {run['loss']}, timers {run['timers']},"
        f" {run['clients']} {run['clients_kind']} MACs, perfdhcp -r {run['rate']}"
        f" -p {run['seconds']}{' with secs counting from the loss' if run.get('secs') else ''};"
        f" machine: {run['machine']};"
        f" wall time {run['wall_seconds'] / 60:.1f} min"
    )
    first = run["runs"][0]
    print(f"timers in the row: {first['timers']}")
    print(f"command: {first['command']}")
    print(
        "\n| run | load | lost at | first window with an answer | first answer |"
        " primary's clients served by the survivor | last unanswered |"
        " unanswered after (primary's clients) |"
        " REQUESTs unanswered | unanswered before / silent windows | answers before"
        " (p/s) | answers after (p/s) | perfdhcp drops |"
    )
    print("|" + " ---: |" * 13)
    for r in run["runs"]:
        p, s = r["primary"], r["secondary"]
        before, after = r["answers_before"], r["answers_after"]
        do = r["perfdhcp"].get("do", {})
        ra = r["perfdhcp"].get("ra", {})
        print(
            f"| {r['run']} | {r['load_before'][0]:.1f} | {r['kill_at']:.2f} s"
            f" | {fmt(r['gap_window'])} | {fmt(r['gap_any'])}"
            f" | {fmt(r['gap_primary_clients'])} | {fmt(r['last_unanswered'], 'none')}"
            f" | {r['unanswered_after']} of {r['sent_after']}"
            f" ({r['unanswered_after_primary_clients']}; {r['primary_clients']} of"
            f" {r['clients_seen']} MACs)"
            f" | {r['requests_unanswered_after']}"
            f" | {r['unanswered_before']} of {r['sent_before']} / {r['silent_windows_before']}"
            f" | {before.get(p, 0)}/{before.get(s, 0)} | {after.get(p, 0)}/{after.get(s, 0)}"
            f" | {do.get('drops', 0):.0f} + {ra.get('drops', 0):.0f} |"
        )
    for r in run["runs"]:
        print(f"\nrun {r['run']}: survivor's states (s after the loss): "
              + ", ".join(f"{t:+.2f} {state}" for t, state in r["states"]))  # fmt: skip
        print(f"highest secs field after the loss: {r.get('secs_max_after', 0)}")
        print("windows of 100 ms from 1 s before the loss (at '|'):")
        line, who = timeline(r, r["primary"], r["secondary"]).split("\n")
        print("  " + line[:10] + "|" + line[10:])
        print("  " + who[:10] + "|" + who[10:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("isc", "kea"), default="isc")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loss", choices=("kill", "silent"), default="kill")
    parser.add_argument("--timers", choices=("test", "default"), default="test")
    parser.add_argument("--clients-kind", choices=("pool", "reserved"), default="pool")
    parser.add_argument("--rate", type=int, default=50, help="exchanges per second")
    parser.add_argument("--clients", type=int, default=40, help="distinct MACs")
    parser.add_argument("--seconds", type=int, default=25, help="perfdhcp's test period")
    parser.add_argument("--kill-at", type=float, default=8.0, help="seconds into the run")
    parser.add_argument(
        "--secs",
        action="store_true",
        help="from --kill-at on, perfdhcp's secs field counts up (-Y/-y), as a client's"
        " does while it gets no answer (ISC's load-balance-max-seconds, Kea's max-ack-delay)",
    )
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    parser.add_argument("--from-json", type=Path, help="report a saved --json run")
    args = parser.parse_args(argv)
    if not 0 < args.clients <= POOL[0] - RESERVED_BASE:
        parser.error(f"--clients must be in 1..{POOL[0] - RESERVED_BASE}")
    if not 0 < args.kill_at < args.seconds:
        parser.error("--kill-at must fall inside --seconds")
    if args.secs and args.kill_at != int(args.kill_at):
        parser.error("--secs needs a whole --kill-at (perfdhcp -Y takes seconds)")
    run = dhcp_lab.run_or_load(args, measure)
    if run is None:
        return 2
    report(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
