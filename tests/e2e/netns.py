"""A real DHCP exchange between two network namespaces joined by a veth pair.

    with netns.link() as net, netns.isc_dhcpd(net, conf, workdir):
        assert netns.client(net, workdir).request("02:00:5e:10:00:01") == str(net.host(20))

Names (namespaces, veth ends) carry a tag drawn from the pid and a uuid, and the
addresses come from 10.64.0.0/10 chosen by the same tag, so parallel runs never meet. The
addresses exist only inside the namespaces: no traffic leaves them. Every context
manager cleans up on the way out, also when the body failed: servers are stopped, any
process left in a namespace is killed, and the namespaces are deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import waiting

HERE = Path(__file__).resolve().parent
RELOAD_DHCPD = HERE / "reload_dhcpd.sh"
DHCPD = "/usr/sbin/dhcpd"
KEA_DHCP4 = "/usr/sbin/kea-dhcp4"

CLIENT_TIMEOUT = 15.0  # seconds one udhcpc run may take before it is killed
DISCOVER_TRIES = 3  # DHCPDISCOVERs per udhcpc run
DISCOVER_PAUSE = 1  # seconds between them
SERVER_START_DEADLINE = 15.0  # seconds
STOP_DEADLINE = 5.0  # seconds between SIGTERM and SIGKILL
POLL = 0.02  # seconds between checks of a condition with a deadline

# The udhcpc event script: write the bound address to OUT, configure nothing.
_CLIENT_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew) echo "$ip" > "{out}.tmp" && mv "{out}.tmp" "{out}" ;;
esac
exit 0
"""


class HarnessError(RuntimeError):
    """The namespaces or a DHCP server could not be set up; the message says why."""


def available() -> tuple[bool, str]:
    """Whether this machine can run the harness, and if not, what is missing."""
    if os.geteuid() != 0:
        return False, "root (network namespaces)"
    for tool in ("ip", "busybox"):
        if shutil.which(tool) is None:
            return False, tool
    probe = f"mdbprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if done.returncode != 0:
        return False, f"ip netns ({done.stderr.decode().strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True, ""


def have_dhcpd() -> bool:
    return Path(DHCPD).exists()


def have_kea() -> bool:
    return Path(KEA_DHCP4).exists()


@dataclass(frozen=True, kw_only=True)
class Link:
    """Two namespaces and the veth between them; the server end has an address."""

    tag: str
    server_ns: str
    client_ns: str
    server_if: str
    client_if: str
    network: ipaddress.IPv4Network
    server_ip: ipaddress.IPv4Address
    # The server namespace's end of a second veth into the test's own namespace, so
    # the test process (and a generator it runs) reaches the server's TCP ports (OMAPI)
    # over a connected route: nothing is ever sent towards the machine's real network.
    control_ip: ipaddress.IPv4Address | None = None

    def host(self, n: int) -> ipaddress.IPv4Address:
        """The n-th address of the network (n=1 is the server)."""
        return self.network.network_address + n


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _new_tag() -> str:
    return f"{os.getpid() % 0x10000:04x}{uuid.uuid4().hex[:4]}"


def _network_for(tag: str, prefixlen: int) -> ipaddress.IPv4Network:
    # a network of 10.64.0.0/10 chosen by the tag: /24s 10.64.0.0 .. 10.127.255.0, etc.
    if not 10 < prefixlen <= 30:
        raise HarnessError(f"prefix length {prefixlen} does not fit in 10.64.0.0/10")
    index = int(tag, 16) % (1 << (prefixlen - 10))
    return ipaddress.IPv4Network((0x0A400000 + (index << (32 - prefixlen)), prefixlen))


def _control_network_for(tag: str) -> ipaddress.IPv4Network:
    # a /30 of link-local 169.254.64.0/18 (never routed off a link) chosen by the tag:
    # 2**12 of them fit
    index = int(tag, 16) % (1 << 12)
    return ipaddress.IPv4Network((0xA9FE4000 + (index << 2), 30))


@contextlib.contextmanager
def link(prefixlen: int = 24, *, control: bool = False) -> Iterator[Link]:
    """Create the two namespaces and the veth pair; delete them all on exit.

    The server end gets the first address of a ``prefixlen`` network of 10.64.0.0/10.
    With ``control``, a second veth joins the server namespace to the caller's, on a
    link-local /30: its server end is ``control_ip``.
    """
    tag = _new_tag()
    network = _network_for(tag, prefixlen)
    control_net = _control_network_for(tag)
    net = Link(
        tag=tag,
        server_ns=f"mdb-{tag}-srv",
        client_ns=f"mdb-{tag}-cli",
        server_if=f"mdb{tag}s",
        client_if=f"mdb{tag}c",
        network=network,
        server_ip=network.network_address + 1,
        control_ip=control_net.network_address + 2 if control else None,
    )
    created: list[str] = []
    try:
        for ns in (net.server_ns, net.client_ns):
            _ip("netns", "add", ns)
            created.append(ns)
        # Both ends are born inside their namespaces: nothing appears in the host's.
        veth = ["link", "add", net.server_if, "netns", net.server_ns, "type", "veth"]
        _ip(*veth, "peer", "name", net.client_if, "netns", net.client_ns)
        address = f"{net.server_ip}/{network.prefixlen}"
        _ip("-n", net.server_ns, "addr", "add", address, "dev", net.server_if)
        for ns, dev in ((net.server_ns, net.server_if), (net.client_ns, net.client_if)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        if control:
            _control_link(net, control_net)
        yield net
    finally:
        for ns in created:
            kill_namespace_processes(ns)
            _ip("netns", "del", ns, check=False)


def _control_link(net: Link, control_net: ipaddress.IPv4Network) -> None:
    """The second veth: its host end is deleted with the server namespace's end."""
    here, there = f"mdb{net.tag}h", f"mdb{net.tag}n"
    _ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", net.server_ns)
    _ip("addr", "add", f"{control_net.network_address + 1}/30", "dev", here)
    _ip("-n", net.server_ns, "addr", "add", f"{net.control_ip}/30", "dev", there)
    _ip("link", "set", here, "up")
    _ip("-n", net.server_ns, "link", "set", there, "up")


def kill_namespace_processes(ns: str) -> None:
    """Kill whatever still runs in ``ns`` (only processes this harness started run there)."""
    done = _ip("netns", "pids", ns, check=False)
    pids = [int(p) for p in done.stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), STOP_DEADLINE, "exit")


def wait_until(condition: Callable[[], Any], deadline: float, what: str) -> Any:
    """``waiting.wait_for`` raising HarnessError (the harness also serves the benchmarks)."""
    return waiting.wait_for(condition, deadline=deadline, what=what, every=POLL, error=HarnessError)


def alive(pid: int) -> bool:
    """Neither gone nor a zombie (dhcpd's parent is PID 1, which reaps it late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_pid(pid: int, name: str) -> None:
    comm = Path(f"/proc/{pid}/comm")
    try:
        if comm.read_text().strip() != name:
            return  # gone, or the pid was recycled
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        return
    with contextlib.suppress(HarnessError):
        wait_until(lambda: not comm.exists(), STOP_DEADLINE, f"{name} to stop")
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- ISC dhcpd -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IscServer:
    """An ISC dhcpd serving ``net`` from ``conf``; restart it with ``reload_command``."""

    net: Link
    conf: Path
    leases: Path
    pid_file: Path
    log: Path
    stamp_file: Path | None

    @property
    def reload_command(self) -> list[str]:
        """The command that restarts dhcpd with the current ``conf`` (for --reload-command)."""
        cmd = [str(RELOAD_DHCPD), self.net.server_ns, self.net.server_if]
        cmd += [str(self.conf), str(self.leases), str(self.pid_file)]
        if self.stamp_file is not None:
            cmd.append(str(self.stamp_file))
        return cmd

    def reload(self) -> None:
        done = subprocess.run(self.reload_command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HarnessError(f"dhcpd did not start: {done.stderr.strip()}")

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        comm = Path(f"/proc/{pid}/comm")
        return pid is not None and comm.exists() and comm.read_text().strip() == "dhcpd"

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            _stop_pid(pid, "dhcpd")


@contextlib.contextmanager
def isc_dhcpd(
    net: Link, conf: Path, workdir: Path, *, stamp_file: Path | None = None, start: bool = True
) -> Iterator[IscServer]:
    """ISC dhcpd on the server end of ``net``; stopped on exit.

    With ``start=False`` only the paths are prepared: the first reload (e.g. the
    generator's) starts it.
    """
    server = IscServer(
        net=net,
        conf=conf,
        leases=workdir / "dhcpd.leases",
        pid_file=workdir / "dhcpd.pid",
        log=workdir / "dhcpd.log",
        stamp_file=stamp_file,
    )
    try:
        if start:
            server.reload()
        yield server
    finally:
        server.stop()


# --- Kea -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KeaServer:
    """kea-dhcp4 serving ``net`` from ``conf``; ``config-reload`` through ``control_socket``."""

    net: Link
    conf: Path
    control_socket: Path
    lease_file: Path
    log: Path
    process: subprocess.Popen[bytes]

    def command(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return kea_command(self.control_socket, name, arguments)

    def reload(self) -> None:
        """``config-reload``: Kea re-reads ``conf``; HarnessError unless it answers result 0."""
        answer = self.command("config-reload")
        if answer.get("result") != 0:
            raise HarnessError(f"config-reload failed: {answer.get('text')}")


def kea_command(
    control_socket: Path, name: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """Send one command to Kea's unix control socket and return its answer (plain JSON)."""
    request: dict[str, Any] = {"command": name}
    if arguments is not None:
        request["arguments"] = arguments
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(control_socket))
        sock.sendall(json.dumps(request).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            with contextlib.suppress(ValueError):
                json.loads(data)
                break  # a complete answer: do not wait for Kea to close
    answer = json.loads(data)
    if isinstance(answer, list):  # answers through the control agent come as a list
        answer = answer[0]
    return dict(answer)


def kea_paths(workdir: Path) -> dict[str, Path]:
    """Where a Kea in ``workdir`` keeps its files (the rendered config must name them)."""
    return {
        "conf": workdir / "kea-dhcp4.conf",
        "control_socket": workdir / "kea4.sock",
        "lease_file": workdir / "kea-leases4.csv",
        "log": workdir / "kea-dhcp4.log",
    }


# Kea's packaged lease file directory, given a private tmpfs when asked (see kea_dhcp4).
KEA_VAR_LIB = "/var/lib"
_PRIVATE_VAR_LIB = (
    'mount -t tmpfs -o size=16m,mode=0755 mdb-e2e "$1" && mkdir -p "$1/kea" && shift && exec "$@"'
)


@contextlib.contextmanager
def kea_dhcp4(
    net: Link, workdir: Path, conf: Path | None = None, *, private_var_lib: bool = False
) -> Iterator[KeaServer]:
    """kea-dhcp4 on the server end of ``net``, running ``conf``; stopped on exit.

    The config must use ``kea_paths(workdir)``'s control socket and listen on
    ``net.server_if``. Kea's pid and lock files go to ``workdir`` too. The lease file is
    ``kea_paths(workdir)``'s, or, with ``private_var_lib``, wherever the config says under
    /var/lib, on a tmpfs that only this Kea sees (its own mount namespace): for configs
    that keep the packaged lease file path, without touching the host's /var/lib.
    """
    paths = kea_paths(workdir)
    conf = conf or paths["conf"]
    if len(str(paths["control_socket"])) > 107:
        raise HarnessError(f"control socket path too long for a unix socket: {workdir}")
    prefix = ["ip", "netns", "exec", net.server_ns]
    if private_var_lib:
        prefix += ["unshare", "--mount", "sh", "-c", _PRIVATE_VAR_LIB, "sh", KEA_VAR_LIB]
    env = {**os.environ, "KEA_PIDFILE_DIR": str(workdir), "KEA_LOCKFILE_DIR": str(workdir)}
    with paths["log"].open("ab") as log:
        process = subprocess.Popen(
            [*prefix, KEA_DHCP4, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = KeaServer(
        net=net,
        conf=conf,
        control_socket=paths["control_socket"],
        lease_file=paths["lease_file"],
        log=paths["log"],
        process=process,
    )

    def answers() -> bool:
        if process.poll() is not None:
            raise HarnessError(f"kea-dhcp4 exited with {process.returncode}; see {paths['log']}")
        try:
            return server.command("status-get").get("result") == 0
        except OSError:
            return False

    try:
        wait_until(answers, SERVER_START_DEADLINE, "kea-dhcp4's control socket")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the client ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Client:
    """A udhcpc in the client namespace; ``request()`` does one fresh DISCOVER..ACK."""

    net: Link
    workdir: Path

    def set_mac(self, mac: str) -> None:
        ns, dev = self.net.client_ns, self.net.client_if
        _ip("-n", ns, "link", "set", dev, "down")
        _ip("-n", ns, "link", "set", dev, "address", mac)
        _ip("-n", ns, "link", "set", dev, "up")

    def request(self, mac: str | None = None) -> str | None:
        """Run udhcpc once; the address it was given, or None if no server answered."""
        if mac is not None:
            self.set_mac(mac)
        out = self.workdir / f"lease-{uuid.uuid4().hex[:8]}"
        script = self.workdir / f"{out.name}.sh"
        script.write_text(_CLIENT_SCRIPT.format(out=out))
        script.chmod(0o755)
        try:
            cmd = ["ip", "netns", "exec", self.net.client_ns, "busybox", "udhcpc"]
            cmd += ["-i", self.net.client_if, "-n", "-q", "-f", "-s", str(script)]
            cmd += ["-t", str(DISCOVER_TRIES), "-T", str(DISCOVER_PAUSE), "-A", "1"]
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(cmd, capture_output=True, timeout=CLIENT_TIMEOUT, check=False)
            return out.read_text().strip() if out.exists() else None
        finally:
            out.unlink(missing_ok=True)
            script.unlink(missing_ok=True)

    def wait_for(
        self, predicate: Callable[[str | None], bool], deadline: float, mac: str | None = None
    ) -> str | None:
        """Request addresses until ``predicate(address)`` holds; HarnessError after ``deadline``.

        Each request is a fresh client, so a server that reloads meanwhile is seen at once.
        """
        if mac is not None:
            self.set_mac(mac)
        seen: list[str | None] = []

        def attempt() -> bool:
            seen.append(self.request())
            return predicate(seen[-1])

        try:
            wait_until(attempt, deadline, "the expected DHCP answer")
        except HarnessError as exc:
            raise HarnessError(f"{exc}; addresses obtained: {seen}") from None
        return seen[-1]


def client(net: Link, workdir: Path) -> Client:
    workdir.mkdir(parents=True, exist_ok=True)
    return Client(net=net, workdir=workdir)
