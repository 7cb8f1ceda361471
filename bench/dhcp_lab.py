"""The whole pipeline serving a real DHCP client: shared by served_latency.py and
dhcp_availability.py.

PostgreSQL (fsync on) and ActiveMQ from scripts/services.py, N hosts in one /15 (the
veth's subnet, with a dynamic pool), the installed ``cdc-relay`` and ``dhcp-generator``
and a real ISC dhcpd in a network namespace (tests/e2e/netns.py; needs root). The
generator reaches dhcpd's OMAPI port over the harness's control link only.

Two ways of applying host changes to ISC dhcpd (``PATHS``):

* omapi: ``--omapi CONTROL_IP:7911 --omapi-key-file KEY``; the reload command (a
  restart) stays set for non-host changes;
* restart: no OMAPI; every change restarts dhcpd with the new file.

Before the daemons start, ``dhcp-generator --once`` (without OMAPI) renders the file and
its reload command starts dhcpd with it, so the daemon's first pass finds the hosts in
place (on the omapi path it restarts dhcpd once, with the OMAPI statements added) and
every later pass is one isolated change.

And two for kea-dhcp4 (``KEA_PATHS``; ``--format kea``, ``--kea-control-socket``):

* hosts-db: ``--kea-hosts-database`` (the generator's login, TCP) and
  ``--kea-hosts-reader`` (Kea's read-only login, the cluster's unix socket): the
  reservations are rows of Kea's ``hosts`` table in a database made by ``kea-admin
  db-init pgsql`` on the same cluster, read by Kea at each lookup; no reload;
* config-reload: the reservations inline in the file; every change rewrites it and
  sends ``config-reload`` through the control socket.

Kea starts on a config without reservations; ``dhcp-generator --once`` then writes the
reservations (rows or file) and reloads it once, before the daemons start.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dhcpd_restart  # bench/dhcpd_restart.py: the DISCOVER, setns
import e2e_latency  # bench/e2e_latency.py: services, percentiles, the machine line
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import services  # noqa: E402  (scripts/services.py)

from tests.e2e import configs, netns, pipeline, segment  # noqa: E402
from tests.integration import kea_hosts_support as khs  # noqa: E402

PATHS = ("omapi", "restart")
KEA_PATHS = ("hosts-db", "config-reload")
SERVERS = {"isc": PATHS, "kea": KEA_PATHS}
CONFIG_COMPLETE = "DHCP4_CONFIG_COMPLETE"  # Kea's log line for each (re)configuration
PREFIX = 15  # the veth's subnet: room for 100,000 hosts, moved addresses and a pool
HOST_BASE = 0x100  # host i (1..N) has address number HOST_BASE + i
MOVE_BASE = 0x1A000  # address numbers for moved interfaces count up from here
ADD_BASE = 0x1C000  # address numbers for added hosts count up from here
POOL = (0x1F000, 0x1F7FF)  # address numbers of the dynamic pool (2048 addresses)
OMAPI_PORT = 7911
KEY_NAME = "bench_omapi"
SETTLE_DEADLINE = 600.0  # seconds for the first render of 100,000 hosts
ONCE_TIMEOUT = 300.0  # seconds for the pre-render (dhcp-generator --once)

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
           %(base)s::inet + (%(host_base)s + i)
    FROM generate_series(1, %(hosts)s) AS i""",
    "SELECT setval(pg_get_serial_sequence('host', 'id'), %(hosts)s)",
    "SELECT setval(pg_get_serial_sequence('interface', 'id'), %(hosts)s)",
    "SET session_replication_role = origin",
    "VACUUM ANALYZE",
]


def mac_of(i: int) -> str:
    """The MAC the load gives interface ``i``."""
    return "02:00:" + ":".join(f"{b:02x}" for b in i.to_bytes(4, "big"))


def address_of(net: netns.Link, i: int) -> str:
    """The address the load gives interface ``i``."""
    return str(net.host(HOST_BASE + i))


@contextlib.contextmanager
def services_up(state: Path) -> Iterator[tuple[services.PostgresCluster, str]]:
    """A PostgreSQL cluster (fsync on) and an ActiveMQ broker, removed on exit."""
    cluster = services.PostgresCluster(state / "pg")
    broker = services.ActiveMQBroker(state / "activemq")
    try:
        cluster.start()
        broker.start()
        yield cluster, broker.url
    finally:
        broker.destroy()
        cluster.destroy()


def database(cluster: services.PostgresCluster, name: str, net: netns.Link, hosts: int) -> str:
    """A migrated database ``name`` holding ``hosts`` hosts in ``net``'s subnet."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = cluster.url(name)
    services.migrate(url)
    params = {
        "network": str(net.network),
        "gateway": str(net.server_ip),
        "pool_start": str(net.host(POOL[0])),
        "pool_end": str(net.host(POOL[1])),
        "hosts": hosts,
        "base": str(net.network.network_address),
        "host_base": HOST_BASE,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LOAD:
            conn.execute(statement, {k: v for k, v in params.items() if f"%({k})s" in statement})
    return url


def client_address(net: netns.Link) -> None:
    """An address on the client's end (outside every host and the pool): lets sockets
    there send broadcasts; DHCP itself does not use it."""
    address = f"{net.network.broadcast_address - 1}/{net.network.prefixlen}"
    netns._ip("-n", net.client_ns, "addr", "add", address, "dev", net.client_if)


def write_key(path: Path) -> Path:
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    path.touch(mode=0o600)
    path.write_text(f'key {KEY_NAME} {{ algorithm hmac-md5; secret "{secret}"; }};\n')
    return path


@dataclass(frozen=True, kw_only=True)
class Lab:
    """One path's running pipeline."""

    path: str
    net: netns.Link
    server: Any  # netns.IscServer or netns.KeaServer
    output: Path
    stamp: Path | None  # dhcpd's restarts (ISC only)
    metrics_port: int
    generator_log: Path
    kea_hosts_url: str | None = None  # the generator's login on Kea's hosts database

    def metrics(self) -> dict[str, float]:
        return metrics(self.metrics_port)

    def in_place(self, address: str) -> bool:
        """A reservation for ``address`` is where the server reads it: the file, or
        Kea's hosts table."""
        if self.kea_hosts_url is not None:
            with psycopg.connect(self.kea_hosts_url) as conn:
                row = conn.execute(
                    "SELECT 1 FROM hosts WHERE ipv4_address = %s::inet - '0.0.0.0'::inet",
                    [address],
                ).fetchone()
            return row is not None
        text = self.output.read_text()
        if self.path in KEA_PATHS:
            return f'"ip-address": "{address}"' in text
        return f"fixed-address {address};" in text

    def reconfigurations(self) -> int:
        """Kea's ``DHCP4_CONFIG_COMPLETE`` lines so far (0 for dhcpd)."""
        if self.path not in KEA_PATHS:
            return 0
        return self.server.log.read_text(errors="replace").count(CONFIG_COMPLETE)


@contextlib.contextmanager
def lab(
    *,
    path: str,
    url: str,
    stomp: str,
    net: netns.Link,
    hosts: int,
    workdir: Path,
    cluster: services.PostgresCluster | None = None,
) -> Iterator[Lab]:
    """The server, relay and generator for ``path``, settled on the database's hosts.
    Kea's paths need ``cluster`` (for the hosts database)."""
    if path in KEA_PATHS:
        if cluster is None:
            raise ValueError(f"path {path!r} needs the cluster")
        with kea_lab(
            path=path, url=url, stomp=stomp, net=net, hosts=hosts, workdir=workdir, cluster=cluster
        ) as kea:
            yield kea
        return
    workdir.mkdir(parents=True)
    output = workdir / "dhcpd.conf"
    stamp = workdir / "reloads"
    metrics_port = services.free_port()
    env = {**os.environ, "DATABASE_URL": url, "STOMP_URL": stomp}
    with netns.isc_dhcpd(net, output, workdir, stamp_file=stamp, start=False) as server:
        args = pipeline.isc_args(server)
        # Without --omapi: with it and no file in place, --once would also send every
        # host to the restarted dhcpd over OMAPI (minutes at 100,000 hosts). The daemon
        # then adds the OMAPI statements to the preamble: one restart, no host sent.
        once = [pipeline.command("dhcp-generator"), "--once", *args]
        subprocess.run(once, env=env, check=True, capture_output=True, timeout=ONCE_TIMEOUT)
        if path == "omapi":
            key = write_key(workdir / "omapi.key")
            args += ["--omapi", f"{net.control_ip}:{OMAPI_PORT}", "--omapi-key-file", str(key)]
        elif path != "restart":
            raise ValueError(f"unknown path {path!r}")
        destination = f"/topic/VirtualTopic.bench{uuid.uuid4().hex[:8]}"
        generator_log = workdir / "generator.log"
        with contextlib.ExitStack() as daemons:
            daemons.enter_context(
                pipeline.relay(
                    database_url=url,
                    stomp_url=stomp,
                    destination=destination,
                    log=workdir / "relay.log",
                )
            )
            daemons.enter_context(
                pipeline.generator(
                    database_url=url,
                    stomp_url=stomp,
                    destination=destination,
                    consumer=f"bench{path}",
                    args=[*args, "--metrics-port", str(metrics_port)],
                    log=generator_log,
                )
            )
            netns.wait_until(
                lambda: _first_pass_done(metrics_port), SETTLE_DEADLINE, "the daemon's first pass"
            )
            e2e_latency.wait_settled(output, hosts, server)
            yield Lab(
                path=path,
                net=net,
                server=server,
                output=output,
                stamp=stamp,
                metrics_port=metrics_port,
                generator_log=generator_log,
            )


def kea_hosts_database(cluster: services.PostgresCluster) -> tuple[str, str]:
    """A fresh Kea hosts database (``kea-admin db-init pgsql``, the roles and GRANTs of
    docs/deployment.md): the generator's URL (TCP) and Kea's (the unix socket)."""
    khs.init_template(cluster.url(), "127.0.0.1", cluster.port)
    name = f"kea_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {khs.TEMPLATE}")
    writer = khs.url(cluster.url(), name, khs.WRITER)
    reader = f"postgresql://{khs.READER}@/{name}?host={cluster.socket_dir}&port={cluster.port}"
    return writer, reader


@contextlib.contextmanager
def kea_lab(
    *,
    path: str,
    url: str,
    stomp: str,
    net: netns.Link,
    hosts: int,
    workdir: Path,
    cluster: services.PostgresCluster,
) -> Iterator[Lab]:
    """kea-dhcp4, relay and generator for a Kea ``path``, settled on the hosts."""
    workdir.mkdir(parents=True)
    paths = netns.kea_paths(workdir)
    args = pipeline.kea_args(workdir)
    writer = None
    if path == "hosts-db":
        writer, reader = kea_hosts_database(cluster)
        args += ["--kea-hosts-database", writer, "--kea-hosts-reader", reader]
    elif path != "config-reload":
        raise ValueError(f"unknown path {path!r}")
    paths["conf"].write_text(configs.kea(net, workdir, {}))  # no reservations yet
    env = {**os.environ, "DATABASE_URL": url, "STOMP_URL": stomp}
    with netns.kea_dhcp4(net, workdir) as server:
        once = [pipeline.command("dhcp-generator"), "--once", *args]
        done = subprocess.run(
            once, env=env, capture_output=True, text=True, timeout=ONCE_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise netns.HarnessError(f"dhcp-generator --once failed: {done.stderr[-2000:]}")
        lab_ = Lab(
            path=path,
            net=net,
            server=server,
            output=paths["conf"],
            stamp=None,
            metrics_port=services.free_port(),
            generator_log=workdir / "generator.log",
            kea_hosts_url=writer,
        )
        with _daemons(lab_, url=url, stomp=stomp, args=args, workdir=workdir):
            netns.wait_until(
                lambda: _kea_settled(lab_, hosts), SETTLE_DEADLINE, f"Kea serving {hosts} hosts"
            )
            yield lab_


@contextlib.contextmanager
def _daemons(lab_: Lab, *, url: str, stomp: str, args: list[str], workdir: Path) -> Iterator[None]:
    """The relay and the generator for ``lab_``, past the generator's first pass."""
    destination = f"/topic/VirtualTopic.bench{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as daemons:
        daemons.enter_context(
            pipeline.relay(
                database_url=url, stomp_url=stomp, destination=destination,
                log=workdir / "relay.log",
            )
        )  # fmt: skip
        daemons.enter_context(
            pipeline.generator(
                database_url=url, stomp_url=stomp, destination=destination,
                consumer=f"bench{lab_.path.replace('-', '')}",
                args=[*args, "--metrics-port", str(lab_.metrics_port)],
                log=lab_.generator_log,
            )
        )  # fmt: skip
        netns.wait_until(
            lambda: _first_pass_done(lab_.metrics_port), SETTLE_DEADLINE, "the daemon's first pass"
        )
        yield


def _kea_settled(lab_: Lab, hosts: int) -> bool:
    """Every host is where Kea reads it, and Kea answers on its control socket."""
    if lab_.kea_hosts_url is not None:
        with psycopg.connect(lab_.kea_hosts_url) as conn:
            row = conn.execute("SELECT count(*) FROM hosts").fetchone()
        placed = row[0] if row else 0
    else:
        placed = lab_.output.read_text().count('"hw-address"')
    return placed >= hosts and lab_.server.command("status-get").get("result") == 0


def _first_pass_done(port: int) -> bool:
    """The generator's metrics answer and say a config was confirmed current."""
    try:
        sample = metrics(port)
    except OSError:
        return False
    return sample.get("dhcp_generator_last_applied_timestamp_seconds", 0.0) > 0


def metrics(port: int) -> dict[str, float]:
    """The generator's samples, ``name{labels}`` -> value (comments left out)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


APPLY_COUNTERS = {
    "omapi": 'dhcp_generator_applies_total{kind="omapi"}',
    "restart": 'dhcp_generator_applies_total{kind="restart"}',
    "unchanged": 'dhcp_generator_applies_total{kind="unchanged"}',
    "kea_hosts": 'dhcp_generator_applies_total{kind="kea_hosts"}',
    "fallbacks": "dhcp_generator_omapi_fallbacks_total",
    "mismatches": "dhcp_generator_omapi_mismatches_total",
}


def counters(lab_: Lab) -> dict[str, float]:
    """The apply and OMAPI counters (0 for a sample not exported yet)."""
    sample = lab_.metrics()
    found = {label: sample.get(name, 0.0) for label, name in APPLY_COUNTERS.items()}
    if lab_.path in KEA_PATHS:
        found["reconfigurations"] = float(lab_.reconfigurations())
    return found


def log_lines(path: Path, *words: str) -> list[str]:
    """Lines of a daemon log that hold any of ``words``."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [line for line in lines if any(word in line for word in words)]


# --- the probe ------------------------------------------------------------------------


OFFER = 2  # DHCP message type (option 53) of a DHCPOFFER


def dhcp_options(bootp: bytes) -> tuple[int | None, str | None]:
    """The message type (option 53) and the server identifier (option 54) of a BOOTP
    payload whose options start past the magic cookie (offset 240); None where absent."""
    kind: int | None = None
    server: str | None = None
    i = 240
    while i < len(bootp) and bootp[i] != 255:
        if bootp[i] == 0:
            i += 1
            continue
        if i + 1 >= len(bootp):
            break
        code, size = bootp[i], bootp[i + 1]
        value = bootp[i + 2 : i + 2 + size]
        if code == 53 and size >= 1:
            kind = value[0]
        elif code == 54 and size == 4:
            server = socket.inet_ntoa(value)
        i += 2 + size
    return kind, server


def offer_of(packet: bytes, mac: str) -> tuple[str, str | None] | None:
    """(offered address, server identifier) of a DHCPOFFER for ``mac``, else None."""
    if len(packet) < 240 or packet[0] != 2 or packet[28:34] != bytes.fromhex(mac.replace(":", "")):
        return None
    if packet[236:240] != b"\x63\x82\x53\x63":
        return None
    kind, server = dhcp_options(packet)
    if kind != OFFER:
        return None
    return socket.inet_ntoa(packet[16:20]), server


class Prober:
    """A DHCP client in the client namespace: broadcasts a DHCPDISCOVER for the watched
    MAC every ``interval`` seconds and keeps each DHCPOFFER's (arrival, address, server
    identifier) and each DISCOVER's sending time."""

    def __init__(self, net: netns.Link | segment.Segment, interval: float) -> None:
        with dhcpd_restart.in_namespace(net.client_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, net.client_if.encode())
        sock.bind(("0.0.0.0", 68))
        self.sock, self.interval = sock, interval
        self.lock = threading.Lock()
        self.mac: str | None = None
        self.offers: list[tuple[float, str, str | None]] = []  # watched MAC, monotonic
        self.sent: list[float] = []  # DISCOVERs for the watched MAC, monotonic
        self.start = 0.0  # monotonic time of the watched MAC's first DISCOVER
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def watch(self, mac: str | None, start: float = 0.0) -> None:
        """Probe ``mac`` from ``start`` (monotonic; 0: now) on (None: stop sending);
        forget earlier offers."""
        with self.lock:
            self.mac, self.offers, self.sent, self.start = mac, [], [], start

    def first_offer(self, address: str, after: float) -> tuple[float, str | None] | None:
        """(arrival, server identifier) of the first offer of ``address`` after ``after``."""
        with self.lock:
            return next(((t, s) for t, a, s in self.offers if a == address and t > after), None)

    def first(self, address: str, after: float) -> float | None:
        found = self.first_offer(address, after)
        return None if found is None else found[0]

    def since(self, moment: float) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, a) for t, a, _ in self.offers if t >= moment]

    def seen(self) -> tuple[list[tuple[float, str, str | None]], list[float]]:
        with self.lock:
            return list(self.offers), list(self.sent)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        xid = secrets.randbits(24) << 8
        next_send = time.monotonic()
        while not self.stop.is_set():
            mac = self.mac
            now = time.monotonic()
            if now >= next_send:
                if mac is not None and now >= self.start:
                    xid = (xid + 1) & 0xFFFFFFFF
                    with contextlib.suppress(OSError):
                        self.sock.sendto(dhcpd_restart.discover(mac, xid), ("255.255.255.255", 67))
                        with self.lock:
                            if self.mac == mac:
                                self.sent.append(now)
                next_send = now + self.interval
            self.sock.settimeout(max(next_send - time.monotonic(), 0.0002))
            try:
                packet = self.sock.recv(2048)
            except (TimeoutError, OSError):
                continue
            arrived = time.monotonic()
            if mac is None:
                continue
            offer = offer_of(packet, mac)
            if offer is not None:
                with self.lock:
                    if self.mac == mac:
                        self.offers.append((arrived, *offer))


def percentile(values: list[float], q: float) -> float:
    return e2e_latency.percentile(values, q)


def machine() -> str:
    return e2e_latency.machine()


def run_or_load(
    args: Any, measure: Callable[[Any], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """The run to report: read back from ``--from-json``, or measured now (and saved to
    ``--json`` if given); None if the measurement could not be made."""
    if args.from_json:
        loaded: dict[str, Any] = json.loads(args.from_json.read_text())
        return loaded
    run = measure(args)
    if run is not None and args.json:
        args.json.write_text(json.dumps(run))
    return run
