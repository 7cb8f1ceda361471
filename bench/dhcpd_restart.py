#!/usr/bin/env python3
"""How long a restart of ISC dhcpd leaves clients without an answer, per way of stopping it.

The generator applies host changes over OMAPI; subnet and global changes still restart
dhcpd (it has no reload). This measures that restart in a network namespace (the
end-to-end harness, tests/e2e/netns.py; needs root) with a real dhcpd serving N host
declarations, an OMAPI listener with a key (as the generator renders it) and an OMAPI
connection open at the moment of the stop, as the generator keeps one.

A prober in the client namespace broadcasts a DHCPDISCOVER for a reserved MAC every
``--probe-ms`` and records each DHCPOFFER of the reserved address. For every restart:

* stop: from the stop request to dhcpd's exit (it runs in the foreground as this
  process's child, so its exit is seen at once, as a supervisor or systemd sees it);
* start: from the new dhcpd's exec to the first offer it makes;
* gap: from the old dhcpd's last offer to the new one's first: the time with no DHCP
  (to within one probe interval).

Ways of stopping:

* term: SIGTERM, wait for the exit, start;
* kill: SIGKILL, wait for the exit, start;
* omapi: OMAPI's control object set to state 2 (shutdown; ``omshell``: ``new control;
  open; set state = 2; update``): dhcpd's own shutdown sequence, the one a build with
  ENABLE_GENTLE_SHUTDOWN runs on SIGTERM (it tells a failover peer it is going down);
* term-orphan: dhcpd started as a daemon (no -f, as Debian's init script and the old
  tests/e2e/reload_dhcpd.sh did), SIGTERM, then wait for /proc/PID to disappear. The
  daemon's parent is PID 1, so what this waits for is PID 1 reaping a zombie.

Then two safety checks: whether this dhcpd catches SIGTERM at all, and what it does at
start with a lease file whose last record was cut in the middle (a kill between the
two write()s of a record that straddles stdio's buffer).

    .venv/bin/python bench/dhcpd_restart.py [--hosts 100,10000] [--runs 10]
        [--methods term,kill,omapi,term-orphan] [--probe-ms 5] [--json FILE]
    .venv/bin/python bench/dhcpd_restart.py --hosts 100,10000,100000   # ~3 more minutes
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import math
import os
import platform
import secrets
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pypureomapi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import netns  # noqa: E402

DHCPD = "/usr/sbin/dhcpd"
OMAPI_PORT = 7911
KEY_NAME = "omapi_key"
PROBE_MAC = "02:00:5e:10:00:01"
PROBE_HOST = 20  # host number of the probe MAC's fixed address
FIRST_HOST = 1000  # host numbers of the other declarations start here
STOP_DEADLINE = 30.0  # seconds for the old dhcpd to exit (omapi: ~12 s)
ANSWER_DEADLINE = 30.0  # seconds for the new dhcpd's first offer
WARM_UP = 0.3  # seconds of offers from the old dhcpd before each stop
CLONE_NEWNET = 0x40000000
METHODS = ("term", "kill", "omapi", "term-orphan")
SLOW = {"omapi": 3, "term-orphan": 3}  # runs at most: these take seconds each


# --- the probe: DHCPDISCOVER out, DHCPOFFER in ----------------------------------------


def discover(mac: str, xid: int) -> bytes:
    """A broadcast DHCPDISCOVER (flags: broadcast, so the offer comes back broadcast)."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s", 1, 1, 6, 0, xid, 0, 0x8000, *[b"\0" * 4] * 4, chaddr
    )
    options = b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\xff"
    return (header + b"\0" * 192 + options).ljust(300, b"\0")


def offered(packet: bytes, mac: str) -> str | None:
    """The address a DHCPOFFER for ``mac`` offers, or None for any other packet."""
    if len(packet) < 244 or packet[0] != 2 or packet[28:34] != bytes.fromhex(mac.replace(":", "")):
        return None
    i = 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        code, size = packet[i], packet[i + 1]
        if code == 53 and packet[i + 2] == 2:
            return socket.inet_ntoa(packet[16:20])
        i += 2 + size
    return None


class Prober:
    """Broadcasts a DISCOVER every ``interval`` and keeps the arrival time of each offer."""

    def __init__(self, sock: socket.socket, mac: str, address: str, interval: float) -> None:
        self.sock, self.mac, self.address, self.interval = sock, mac, address, interval
        self.offers: list[float] = []  # monotonic arrival times, appended by the thread
        self.wrong: list[str] = []  # offers of another address (must stay empty)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        xid = secrets.randbits(24) << 8
        next_send = time.monotonic()
        self.sock.settimeout(self.interval)
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                xid += 1
                with contextlib.suppress(OSError):
                    self.sock.sendto(discover(self.mac, xid), ("255.255.255.255", 67))
                next_send = now + self.interval
            self.sock.settimeout(max(next_send - time.monotonic(), 0.0005))
            try:
                packet = self.sock.recv(2048)
            except TimeoutError:
                continue
            address = offered(packet, self.mac)
            if address == self.address:
                self.offers.append(time.monotonic())
            elif address is not None:
                self.wrong.append(address)

    def first_after(self, moment: float) -> float | None:
        return min((t for t in list(self.offers) if t > moment), default=None)

    def last_before(self, moment: float) -> float | None:
        return max((t for t in list(self.offers) if t <= moment), default=None)


# --- network namespaces ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def in_namespace(name: str) -> Iterator[None]:
    """Run the calling thread in network namespace ``name``; sockets made here stay there."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


# --- dhcpd ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Setup:
    net: netns.Link
    workdir: Path
    conf: Path
    leases: Path
    key_file: Path
    secret: str  # base64

    @property
    def pid_file(self) -> Path:
        return self.workdir / "dhcpd.pid"

    def command(self, *, foreground: bool = True) -> list[str]:
        cmd = ["ip", "netns", "exec", self.net.server_ns, DHCPD, "-4", "-q"]
        cmd += ["-f"] if foreground else []
        cmd += ["-cf", str(self.conf), "-lf", str(self.leases), "-pf", str(self.pid_file)]
        return [*cmd, self.net.server_if]

    def omapi(self) -> pypureomapi.Omapi:
        with in_namespace(self.net.client_ns):
            return pypureomapi.Omapi(
                str(self.net.server_ip), OMAPI_PORT, KEY_NAME.encode(), self.secret.encode(), 5.0
            )


def mac_of(i: int) -> str:
    return "02:00:5f:" + ":".join(f"{b:02x}" for b in i.to_bytes(3, "big"))


def prefix_for(hosts: int) -> int:
    """A prefix length whose network holds the hosts, the probe and the client's address."""
    return min(24, 32 - math.ceil(math.log2(FIRST_HOST + hosts + 2)))


def write_config(net: netns.Link, workdir: Path, hosts: int) -> Setup:
    secret = base64.b64encode(secrets.token_bytes(64)).decode()
    key_file = workdir / "omapi.key"
    key_file.touch(mode=0o600)
    key_file.write_text(f'key {KEY_NAME} {{ algorithm hmac-md5; secret "{secret}"; }};\n')
    network = net.network
    lines = [
        "authoritative;",
        "default-lease-time 600;",
        "max-lease-time 600;",
        f"omapi-port {OMAPI_PORT};",
        f'include "{key_file}";',
        f"omapi-key {KEY_NAME};",
        f"subnet {network.network_address} netmask {network.netmask} {{",
        f"  range {net.host(100)} {net.host(150)};",
        "}",
        f"host probe {{ hardware ethernet {PROBE_MAC}; fixed-address {net.host(PROBE_HOST)}; }}",
    ]
    for i in range(hosts - 1):
        address = net.host(FIRST_HOST + i)
        lines.append(f"host h{i} {{ hardware ethernet {mac_of(i)}; fixed-address {address}; }}")
    conf = workdir / "dhcpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    leases = workdir / "dhcpd.leases"
    leases.touch()
    return Setup(
        net=net, workdir=workdir, conf=conf, leases=leases, key_file=key_file, secret=secret
    )


class Server:
    """The dhcpd being restarted: a foreground child, or (term-orphan) a daemon."""

    def __init__(self, setup: Setup, log: Any) -> None:
        self.setup, self.log = setup, log
        self.process: subprocess.Popen[bytes] | None = None
        self.daemon_pid: int | None = None

    def start(self, *, foreground: bool = True) -> None:
        self.setup.pid_file.unlink(missing_ok=True)
        cmd = self.setup.command(foreground=foreground)
        if foreground:
            self.process = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
            self.daemon_pid = None
        else:  # the parent exits once the daemon serves; the daemon's parent is PID 1
            subprocess.run(cmd, stdout=self.log, stderr=self.log, check=True)
            self.process = None
            self.daemon_pid = int(self.setup.pid_file.read_text())

    def pid(self) -> int:
        return self.process.pid if self.process is not None else int(self.daemon_pid or 0)

    def wait_exit(self) -> None:
        if self.process is not None:  # a pidfd: Popen.wait(timeout) polls in 1-50 ms steps
            pidfd = os.pidfd_open(self.process.pid)
            try:
                if not select.select([pidfd], [], [], STOP_DEADLINE)[0]:
                    raise netns.HarnessError(f"dhcpd still runs {STOP_DEADLINE:g} s later")
            finally:
                os.close(pidfd)
            self.process.wait()
            return
        proc = Path(f"/proc/{self.daemon_pid}")
        netns.wait_until(lambda: not proc.exists(), STOP_DEADLINE, "the daemon's /proc entry")

    def catches(self, signum: int) -> bool:
        status = Path(f"/proc/{self.pid()}/status").read_text()
        caught = int(
            next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16
        )
        return bool(caught & (1 << (signum - 1)))

    def kill_now(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid(), signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.wait_exit()


def omapi_shutdown(connection: pypureomapi.Omapi) -> None:
    """``new control; open; set state = 2; update``, then hang up: dhcpd does not answer
    the update, and waits up to ~5 s for open OMAPI connections to close before it exits."""
    control = connection.query_server(pypureomapi.OmapiMessage.open(b"control"))
    update = pypureomapi.OmapiMessage.update(control.handle)
    update.update_object({b"state": struct.pack("!I", 2)})
    connection.send_message(update)
    connection.close()


# --- one restart ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Sample:
    hosts: int
    method: str
    stop: float  # seconds
    start: float
    gap: float
    old_answered_after_request: bool


def restart(server: Server, prober: Prober, method: str) -> Sample:
    foreground = method != "term-orphan"
    netns.wait_until(
        lambda: prober.offers and prober.offers[-1] > time.monotonic() - 0.1,
        ANSWER_DEADLINE,
        "offers from the running dhcpd",
    )
    time.sleep(WARM_UP)
    connection = server.setup.omapi()  # the generator's connection, open at the stop
    requested = time.monotonic()
    if method in ("term", "term-orphan"):
        os.kill(server.pid(), signal.SIGTERM)
    elif method == "kill":
        os.kill(server.pid(), signal.SIGKILL)
    elif method == "omapi":
        omapi_shutdown(connection)
    server.wait_exit()
    exited = time.monotonic()
    with contextlib.suppress(OSError):
        connection.close()
    started = time.monotonic()
    server.start(foreground=foreground)
    answered = netns.wait_until(
        lambda: prober.first_after(exited), ANSWER_DEADLINE, "the new dhcpd's first offer"
    )
    last_old = prober.last_before(exited)
    if server.process is not None and server.process.poll() is not None:
        raise netns.HarnessError(f"dhcpd exited after its restart: see {server.log.name}")
    return Sample(
        hosts=0,
        method=method,
        stop=exited - requested,
        start=answered - started,
        gap=answered - (last_old if last_old is not None else requested),
        old_answered_after_request=last_old is not None and last_old > requested,
    )


def measure(hosts: int, methods: list[str], runs: int, probe: float) -> tuple[list[Sample], bool]:
    samples: list[Sample] = []
    with netns.link(prefix_for(hosts)) as net, tempfile.TemporaryDirectory() as tmp:
        setup = write_config(net, Path(tmp), hosts)
        client_ip = net.network.broadcast_address - 1
        netns._ip(
            "-n",
            net.client_ns,
            "addr",
            "add",
            f"{client_ip}/{net.network.prefixlen}",
            "dev",
            net.client_if,
        )
        with in_namespace(net.client_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, net.client_if.encode())
        sock.bind(("0.0.0.0", 68))
        prober = Prober(sock, PROBE_MAC, str(net.host(PROBE_HOST)), probe)
        with (setup.workdir / "dhcpd.log").open("ab") as log:
            server = Server(setup, log)
            prober.thread.start()
            try:
                server.start()
                netns.wait_until(lambda: prober.offers, ANSWER_DEADLINE, "dhcpd's first offer")
                catches_term = server.catches(signal.SIGTERM)
                for method in methods:
                    count = min(runs, SLOW.get(method, runs))
                    if method == "term-orphan" and server.process is not None:
                        server.kill_now()
                        server.start(foreground=False)
                    for _ in range(count):
                        sample = restart(server, prober, method)
                        samples.append(Sample(**{**asdict(sample), "hosts": hosts}))
                    if method == "term-orphan":
                        server.kill_now()
                        server.start()
                # the project's usual client agrees: udhcpc gets the reserved address
                settled = time.monotonic()
                netns.wait_until(lambda: prober.first_after(settled), ANSWER_DEADLINE, "offers")
                prober.stop.set()
                prober.thread.join(2)
                sock.close()
                got = netns.client(net, setup.workdir / "client").request(PROBE_MAC)
                if got != str(net.host(PROBE_HOST)):
                    raise netns.HarnessError(f"udhcpc got {got} after the restarts")
            finally:
                prober.stop.set()
                prober.thread.join(2)
                sock.close()
                server.kill_now()
        if prober.wrong:
            raise netns.HarnessError(f"offers of other addresses: {sorted(set(prober.wrong))}")
    return samples, catches_term


# --- a lease file cut mid-record ------------------------------------------------------

LEASES_HEAD = """\
authoring-byte-order little-endian;

lease {lease} {{
  starts 4 2026/12/03 08:00:00;
  ends 4 2036/12/03 08:10:00;
  cltt 4 2026/12/03 08:00:00;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet 02:00:5e:10:00:77;
}}
host complete {{
  dynamic;
  hardware ethernet 02:00:5e:10:00:42;
  fixed-address {complete};
}}
"""
CUT_HOST = "host cut {{\n  dynamic;\n  hardware ethernet 02:00:5e:10:00:43;\n  fixed-add"
CUT_LEASE = "lease {cut} {{\n  starts 4 2026/12/03 08:00:00;\n  ends 4 2036/12/03 08:1"


def truncated_lease_file() -> dict[str, Any]:
    """Start dhcpd on lease files whose last record is cut; what it keeps and serves."""
    result: dict[str, Any] = {}
    with netns.link() as net, tempfile.TemporaryDirectory() as tmp:
        setup = write_config(net, Path(tmp), 1)
        udhcpc = netns.client(net, Path(tmp) / "client")
        for case, tail in (("host", CUT_HOST), ("lease", CUT_LEASE)):
            head = LEASES_HEAD.format(lease=net.host(101), complete=net.host(42))
            setup.leases.write_text(head + tail.format(cut=net.host(102)))
            setup.pid_file.unlink(missing_ok=True)
            cmd = [arg for arg in setup.command() if arg != "-q"]
            cmd.insert(cmd.index("-f"), "-d")  # messages to stderr, still in the foreground
            process = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            said: list[str] = []
            assert process.stderr is not None
            for line in process.stderr:  # up to "Server starting service." or the exit
                said.append(line.rstrip())
                if line.startswith("Server starting service"):
                    break
            serves = process.poll() is None
            rewritten = setup.leases.read_text()  # as dhcpd rewrote it at start
            offers = {"complete host": udhcpc.request("02:00:5e:10:00:42") if serves else None}
            if case == "host":  # its fixed address, or a dynamic one from the pool?
                offers["cut host"] = udhcpc.request("02:00:5e:10:00:43") if serves else None
            process.kill()
            process.wait()
            block = (
                rewritten.split("host cut {", 1)[1].split("}", 1)[0]
                if "host cut {" in rewritten
                else None
            )
            cut_lease = f"lease {net.host(102)} " in rewritten
            result[case] = {
                "starts": serves,
                "complete records kept": f"fixed-address {net.host(42)}" in rewritten
                and f"lease {net.host(101)} " in rewritten,
                "cut record": "dropped"
                if block is None and not cut_lease
                else "kept without its fixed-address"
                if block is not None and "fixed-address" not in block
                else "kept",
                "offers": offers,
                "dhcpd says": [ln.strip() for ln in said if " line " in ln][-1:],
            }
    return result


# --- report ---------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:,.0f} / {max(values) * 1000:,.0f}"


def table(samples: list[Sample]) -> str:
    lines = [
        "| hosts | stop | runs | stop ms (median / max) | start ms (median / max) "
        "| gap without DHCP ms (median / max) | old dhcpd answered after the request |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    keys = sorted({(s.hosts, METHODS.index(s.method)) for s in samples})
    for hosts, index in keys:
        group = [s for s in samples if s.hosts == hosts and s.method == METHODS[index]]
        answered = sum(s.old_answered_after_request for s in group)
        lines.append(
            f"| {hosts:,} | {METHODS[index]} | {len(group)} | {ms([s.stop for s in group])} "
            f"| {ms([s.start for s in group])} | {ms([s.gap for s in group])} "
            f"| {answered}/{len(group)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--hosts",
        default="100,10000",
        help="comma-separated host counts (default %(default)s; 100000 adds ~3 min)",
    )
    parser.add_argument("--runs", type=int, default=10, help="restarts per size and way")
    parser.add_argument("--methods", default=",".join(METHODS), help="ways of stopping")
    parser.add_argument("--probe-ms", type=float, default=5.0, help="DISCOVER interval, ms")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    args = parser.parse_args(argv)
    args.sizes = [int(n) for n in args.hosts.split(",")]
    args.methods = args.methods.split(",")
    if unknown := set(args.methods) - set(METHODS):
        parser.error(f"unknown --methods {sorted(unknown)}; choose from {METHODS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok, missing = netns.available()
    if not ok or not Path(DHCPD).exists():
        print(f"dhcpd_restart: needs {missing or DHCPD}", file=sys.stderr)
        return 1
    samples: list[Sample] = []
    catches: dict[int, bool] = {}
    for hosts in args.sizes:
        begun = time.monotonic()
        got, catches[hosts] = measure(hosts, args.methods, args.runs, args.probe_ms / 1000)
        samples += got
        print(
            f"{hosts:,} hosts: {len(got)} restarts in {time.monotonic() - begun:.0f} s",
            file=sys.stderr,
        )
    cut = truncated_lease_file()
    version = subprocess.run([DHCPD, "--version"], capture_output=True, text=True).stderr.strip()
    print(
        f"\n{version}, {platform.node()}, {os.cpu_count()} CPUs, probe every {args.probe_ms:g} ms\n"
    )
    print(table(samples))
    print(f"\ndhcpd catches SIGTERM: {'yes' if any(catches.values()) else 'no (SigCgt)'}")
    for case, facts in cut.items():
        print(f"lease file cut inside a {case} record: {json.dumps(facts)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"samples": [asdict(s) for s in samples], "catches_sigterm": catches, "cut": cut},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
