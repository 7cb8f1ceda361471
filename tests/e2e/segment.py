"""A shared segment: several DHCP server namespaces and a client on one bridge.

    with segment.segment(servers=2) as seg:
        a, b = seg.servers  # netns.Link views: give them to netns.isc_dhcpd / kea_dhcp4
        client = seg.client(workdir)

The bridge lives in a namespace of its own, so the root namespace sees nothing of the
segment but each server's control veth: a link-local /30 of 169.254.64.0/18 between the
test's namespace and that server's, the only way a process of the test's namespace (a
generator's OMAPI, an HTTP request to kea-ctrl-agent) reaches a server. Server ``i``
(from 0) has address ``network.network_address + i + 1`` of a 10.64.0.0/10 network
chosen by the tag; the client has none (udhcpc asks for one). Each server is described
by a ``netns.Link`` whose client end is the segment's client, so the single-link helpers
(servers, ``netns.client``) work unchanged. Everything is deleted on exit, also when the
body failed.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e import netns

BRIDGE = "br0"  # inside the bridge namespace: the name is the namespace's own
MAX_SERVERS = 9  # one digit in interface names (at most 15 characters)


@dataclass(frozen=True, kw_only=True)
class Segment:
    """The namespaces, the bridge, and one ``netns.Link`` view per server."""

    tag: str
    bridge_ns: str
    client_ns: str
    client_if: str
    network: ipaddress.IPv4Network
    servers: tuple[netns.Link, ...]

    def host(self, n: int) -> ipaddress.IPv4Address:
        """The n-th address of the network (1..len(servers) are the servers)."""
        return self.network.network_address + n

    def client(self, workdir: Path) -> netns.Client:
        """The udhcpc client of the segment (its MAC set per request)."""
        return netns.client(self.servers[0], workdir)

    def namespaces(self) -> list[str]:
        return [self.bridge_ns, self.client_ns, *(s.server_ns for s in self.servers)]


def _control_network(tag: str, i: int) -> ipaddress.IPv4Network:
    # the tag's /30 of 169.254.64.0/18 (as netns.link takes it), then the next ones
    first = netns._control_network_for(tag)
    index = (int(first.network_address) - 0xA9FE4000 + 4 * i) % (1 << 14)
    return ipaddress.IPv4Network((0xA9FE4000 + index, 30))


@contextlib.contextmanager
def segment(servers: int = 2, prefixlen: int = 24) -> Iterator[Segment]:
    """Create the bridge, ``servers`` server namespaces and the client; delete them on exit."""
    if not 1 <= servers <= MAX_SERVERS:
        raise netns.HarnessError(f"a segment has 1..{MAX_SERVERS} servers, not {servers}")
    tag = netns._new_tag()
    network = netns._network_for(tag, prefixlen)
    client_ns, client_if = f"mdb-{tag}-cli", f"mdb{tag}c"
    views = []
    for i in range(servers):
        control = _control_network(tag, i)
        views.append(
            netns.Link(
                tag=tag,
                server_ns=f"mdb-{tag}-s{i}",
                client_ns=client_ns,
                server_if=f"mdb{tag}s{i}",
                client_if=client_if,
                network=network,
                server_ip=network.network_address + i + 1,
                control_ip=control.network_address + 2,
            )
        )
    seg = Segment(
        tag=tag,
        bridge_ns=f"mdb-{tag}-br",
        client_ns=client_ns,
        client_if=client_if,
        network=network,
        servers=tuple(views),
    )
    created: list[str] = []
    try:
        for ns in seg.namespaces():
            netns._ip("netns", "add", ns)
            created.append(ns)
            netns._ip("-n", ns, "link", "set", "lo", "up")
        br = ["-n", seg.bridge_ns]
        netns._ip(*br, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0")
        netns._ip(*br, "link", "set", BRIDGE, "up")
        _port(seg, client_ns, client_if, f"mdb{tag}p")
        for i, view in enumerate(views):
            _port(seg, view.server_ns, view.server_if, f"mdb{tag}p{i}")
            address = f"{view.server_ip}/{network.prefixlen}"
            netns._ip("-n", view.server_ns, "addr", "add", address, "dev", view.server_if)
            _control_link(view, _control_network(tag, i), i)
        yield seg
    finally:
        # the control veths first, at once: a deleted namespace's veths go asynchronously
        for i in range(servers):
            netns._ip("link", "del", _control_end(tag, i), check=False)
        # every namespace is deleted even if a process in one outlives its SIGKILL (a
        # zombie child of the test's own process does until it is waited for)
        survivors: list[netns.HarnessError] = []
        for ns in created:
            try:
                netns.kill_namespace_processes(ns)
            except netns.HarnessError as exc:
                survivors.append(netns.HarnessError(f"{ns}: {exc}"))
            netns._ip("netns", "del", ns, check=False)
        if survivors:
            raise survivors[0]


def _port(seg: Segment, ns: str, dev: str, port: str) -> None:
    """A veth from ``ns`` (end ``dev``, up) to a port of the bridge; both born in place."""
    veth = ["link", "add", dev, "netns", ns, "type", "veth"]
    netns._ip(*veth, "peer", "name", port, "netns", seg.bridge_ns)
    netns._ip("-n", seg.bridge_ns, "link", "set", port, "master", BRIDGE)
    netns._ip("-n", seg.bridge_ns, "link", "set", port, "up")
    netns._ip("-n", ns, "link", "set", dev, "up")


def _control_link(view: netns.Link, control: ipaddress.IPv4Network, i: int) -> None:
    """The server's veth into the caller's namespace; deleted with the server's namespace."""
    here, there = _control_end(view.tag, i), f"mdb{view.tag}n{i}"
    netns._ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", view.server_ns)
    netns._ip("addr", "add", f"{control.network_address + 1}/30", "dev", here)
    netns._ip("-n", view.server_ns, "addr", "add", f"{view.control_ip}/30", "dev", there)
    netns._ip("link", "set", here, "up")
    netns._ip("-n", view.server_ns, "link", "set", there, "up")


def _control_end(tag: str, i: int) -> str:
    """The name of server ``i``'s control veth end in the caller's namespace."""
    return f"mdb{tag}h{i}"
