"""The shared-segment harness on its own: server addresses, reachability across the
bridge and over each control link, nothing of it left in the root namespace but the
control veths, all of it gone afterwards (also after a failure), and a real DHCP
exchange through the bridge with a hand-written config."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e import configs, netns, segment
from tests.e2e.conftest import new_mac

pytestmark = [pytest.mark.netns]

PING_TIMEOUT = 5.0  # seconds for one `ping -c1 -W1` run


@pytest.fixture
def harness() -> None:
    require(*netns.available())


def ping(address: object, ns: str | None = None) -> bool:
    """One echo request to ``address``, from namespace ``ns`` (None: the test's own)."""
    cmd = ["busybox", "ping", "-c1", "-W1", str(address)]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    done = subprocess.run(cmd, capture_output=True, timeout=PING_TIMEOUT, check=False)
    return done.returncode == 0


def addresses(ns: str | None, dev: str) -> list[str]:
    where = [] if ns is None else ["-n", ns]
    done = netns._ip(*where, "-j", "-4", "addr", "show", "dev", dev)
    return [
        f"{a['local']}/{a['prefixlen']}" for i in json.loads(done.stdout) for a in i["addr_info"]
    ]


def root_links(tag: str) -> set[str]:
    return {i["ifname"] for i in json.loads(netns._ip("-j", "link").stdout) if tag in i["ifname"]}


def test_servers_share_the_segment_and_each_has_a_control_link(harness: None) -> None:
    with segment.segment(servers=3) as seg:
        a, b, c = seg.servers
        assert [s.server_ip for s in seg.servers] == [seg.host(1), seg.host(2), seg.host(3)]
        assert all(s.network == seg.network for s in seg.servers)
        assert seg.network.subnet_of(ipaddress.IPv4Network("10.64.0.0/10"))
        assert addresses(b.server_ns, b.server_if) == [f"{seg.host(2)}/24"]
        controls = [s.control_ip for s in seg.servers]
        assert len(set(controls)) == 3
        assert all(ip in ipaddress.IPv4Network("169.254.64.0/18") for ip in controls)
        # the root namespace holds the control veths' ends, nothing else of the segment
        assert root_links(seg.tag) == {f"mdb{seg.tag}h{i}" for i in range(3)}

        assert ping(b.server_ip, a.server_ns)
        assert ping(c.server_ip, b.server_ns)
        assert ping(a.server_ip, c.server_ns)
        for server in seg.servers:
            assert ping(server.control_ip)
        # the segment's addresses are not reachable from the test's namespace
        assert not ping(a.server_ip)
        namespaces = seg.namespaces()
    listed = netns._ip("netns", "list").stdout
    assert not [ns for ns in namespaces if ns in listed]
    assert root_links(seg.tag) == set()


def test_everything_is_deleted_after_a_failure(harness: None) -> None:
    with pytest.raises(RuntimeError, match="boom"), segment.segment(servers=2) as seg:
        # a daemon as dhcpd is one: its parent gone, not a child of the test
        daemon = ["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"]
        cmd = ["ip", "netns", "exec", seg.servers[1].server_ns, *daemon]
        pid = int(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        assert Path(f"/proc/{pid}").exists()
        raise RuntimeError("boom")
    assert not Path(f"/proc/{pid}").exists()  # killed with its namespace
    listed = netns._ip("netns", "list").stdout
    assert not [ns for ns in seg.namespaces() if ns in listed]
    assert root_links(seg.tag) == set()


def test_the_client_gets_its_address_through_the_bridge(
    harness: None, workdir: Path, need_dhcpd: None
) -> None:
    mac = new_mac()
    with segment.segment(servers=2) as seg:
        server = seg.servers[1]  # not the first: the client is no server's own link
        conf = workdir / "dhcpd.conf"
        conf.write_text(configs.isc(server, {mac: 20}))
        with netns.isc_dhcpd(server, conf, workdir):
            assert seg.client(workdir / "client").request(mac) == str(seg.host(20))


def test_a_process_outliving_its_sigkill_keeps_no_namespace(harness: None) -> None:
    """A child of the test's own process stays a zombie until waited for: the harness
    says so, and still deletes every namespace (this one waits out the kill deadline)."""
    with (
        contextlib.ExitStack() as reap,  # waits for the child after the segment is gone
        pytest.raises(netns.HarnessError, match="exit"),
        segment.segment(servers=2) as seg,
    ):
        child = subprocess.Popen(["ip", "netns", "exec", seg.servers[1].server_ns, "sleep", "60"])
        reap.callback(child.wait)
    assert child.returncode == -signal.SIGKILL
    listed = netns._ip("netns", "list").stdout
    assert not [ns for ns in seg.namespaces() if ns in listed]
    assert root_links(seg.tag) == set()
