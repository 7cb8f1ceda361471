"""generator.omapi against a real dhcpd, and what dhcpd's lease-file replay does with
OMAPI changes when it restarts.

dhcpd runs in a network namespace with ``omapi-port``; a busybox udhcpc in the other
namespace shows what is really served. The test reaches OMAPI over the harness's
control link (``Link.control_ip``), a connected route into the server's namespace.

A restart here is what a crash and a supervisor give: SIGKILL, then a plain start with
the same config file and lease file. dhcpd writes every OMAPI create and delete into
the lease file (``host X { dynamic; ... }``, ``host X { deleted; }``) and replays it at
start after the config file; each ``test_replay_*`` pins one consequence down.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from generator import omapi
from tests.e2e import configs, netns
from tests.e2e.conftest import new_mac

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd]

OMAPI_PORT = 7911
KEY_NAME = "mdb-omapi"
CONNECT_DEADLINE = 10.0  # seconds for a (re)started dhcpd to take OMAPI connections
TIMING_ROUNDS = 200  # operations timed per kind
OFFER_ROUNDS = 5  # OMAPI adds each followed by a client's request


@dataclass
class Lab:
    """A dhcpd with OMAPI in ``net``, a udhcpc, and an OMAPI client to the dhcpd."""

    net: netns.Link
    workdir: Path
    client: netns.Client
    key: omapi.Key
    stack: contextlib.ExitStack
    server: netns.IscServer | None = None
    omapi: omapi.Client | None = None
    file_hosts: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.workdir / "dhcpd.conf"

    @property
    def leases(self) -> Path:
        return self.workdir / "dhcpd.leases"

    def ip(self, n: int) -> str:
        return str(self.net.host(n))

    def write_conf(self, hosts: dict[str, tuple[str, int]]) -> None:
        """The link's subnet and pool, OMAPI, and ``hosts``: name -> (MAC, host number)."""
        self.file_hosts = hosts
        lines = [
            configs.isc(self.net, {}),
            f"omapi-port {OMAPI_PORT};",
            f'key {self.key.name} {{ algorithm hmac-md5; secret "{self.key.secret}"; }};',
            f"omapi-key {self.key.name};",
        ]
        for name, (mac, n) in sorted(hosts.items()):
            lines.append(f"host {name} {{ hardware ethernet {mac}; fixed-address {self.ip(n)}; }}")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, hosts: dict[str, tuple[str, int]]) -> omapi.Client:
        self.write_conf(hosts)
        self.server = self.stack.enter_context(netns.isc_dhcpd(self.net, self.conf, self.workdir))
        return self.connect()

    def connect(self, key: omapi.Key | None = None) -> omapi.Client:
        client = omapi.Client(host=str(self.net.control_ip), port=OMAPI_PORT, key=key or self.key)

        def connected() -> bool:
            try:
                client.connect()
            except omapi.Unreachable:
                return False
            return True

        netns.wait_until(connected, CONNECT_DEADLINE, "dhcpd's OMAPI port")
        self.stack.callback(client.close)
        if key is None:
            self.omapi = client
        return client

    def kill(self) -> None:
        """SIGKILL dhcpd: nothing gets written on the way out."""
        assert self.server is not None
        pid = self.server.pid()
        assert pid is not None and self.server.running()
        os.kill(pid, signal.SIGKILL)
        netns.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 5.0, "dhcpd to die")

    def restart(self, hosts: dict[str, tuple[str, int]] | None = None) -> omapi.Client:
        """Kill dhcpd, optionally change the config file's hosts, start it plainly again."""
        assert self.server is not None and self.omapi is not None
        self.kill()
        with pytest.raises(omapi.Unreachable):  # the old connection is gone
            self.omapi.lookup_by_name("anything")
        if hosts is not None:
            self.write_conf(hosts)
        self.server.reload()
        return self.connect()

    def served(self, mac: str) -> str | None:
        """The address a fresh udhcpc with ``mac`` gets now (one run, no retry)."""
        return self.client.request(mac)

    def in_pool(self, address: str | None) -> bool:
        return configs.in_pool(self.net, address)

    def lease_records(self, name: str) -> list[str]:
        """The lease file's ``host name { ... }`` records, in order, as one line each."""
        text = self.leases.read_text()
        records = []
        for chunk in text.split(f"host {name} {{")[1:]:
            body = chunk.split("}", 1)[0]
            records.append(" ".join(body.split()))
        return records


@pytest.fixture
def lab(need_dhcpd: None, net: netns.Link, workdir: Path, client: netns.Client) -> Iterator[Lab]:
    secret = base64.b64encode(os.urandom(16)).decode()
    key = omapi.Key(name=KEY_NAME, algorithm="hmac-md5", secret=secret)
    with contextlib.ExitStack() as stack:
        yield Lab(net=net, workdir=workdir, client=client, key=key, stack=stack)


def host(lab: Lab, name: str, mac: str, n: int) -> omapi.Host:
    return omapi.Host(name=name, mac=mac, ip=lab.ip(n))


# --- the running server --------------------------------------------------------------


def test_add_lookup_set_ip_delete_reach_the_client_at_once(lab: Lab) -> None:
    c = lab.start({})
    mac = new_mac()
    assert lab.in_pool(lab.served(mac)), "an unknown MAC gets a pool address"

    c.add(omapi.Host(name="web1", mac=mac, ip=lab.ip(20), hostname="web1.example.org"))
    assert c.lookup_by_mac(mac) == host(lab, "web1", mac, 20)  # hostname is not readable
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 20)
    assert lab.served(mac) == lab.ip(20)
    record = f"dynamic; hardware ethernet {mac}; fixed-address {lab.ip(20)};"
    assert lab.lease_records("web1") == [f'{record} supersede host-name = "web1.example.org";']

    c.set_ip("web1", lab.ip(21))
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 21)
    assert lab.served(mac) == lab.ip(21)

    assert c.delete("web1") is True
    assert c.lookup_by_name("web1") is None and c.lookup_by_mac(mac) is None
    assert c.delete("web1") is False
    assert lab.in_pool(lab.served(mac))
    with pytest.raises(omapi.OmapiError, match="no host web1"):
        c.set_ip("web1", lab.ip(22))


def test_add_refuses_a_taken_name_or_mac(lab: Lab) -> None:
    mac, other = new_mac(), new_mac()
    c = lab.start({"file1": (other, 30)})
    c.add(host(lab, "web1", mac, 20))
    for clash in (
        host(lab, "web1", mac, 21),  # the same object: "specified object already exists"
        host(lab, "web1", new_mac(), 21),  # the name taken: enter_host says EXISTS
        host(lab, "file1", new_mac(), 21),  # a config-file host's name
    ):
        with pytest.raises(omapi.AlreadyExists, match=r"\(result 18\)"):
            c.add(clash)
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 20)


def test_a_wrong_secret_or_key_name_is_unreachable(lab: Lab) -> None:
    lab.start({})
    wrong_secret = omapi.Key(name=KEY_NAME, algorithm="hmac-md5", secret="d3Jvbmcgc2VjcmV0IQ==")
    unknown_name = omapi.Key(name="other", algorithm="hmac-md5", secret=lab.key.secret)
    for key in (wrong_secret, unknown_name):
        client = omapi.Client(host=str(lab.net.control_ip), port=OMAPI_PORT, key=key, timeout=2.0)
        with pytest.raises(omapi.Unreachable) as caught:
            client.connect()
        assert lab.key.secret not in str(caught.value)


def _found(client: omapi.Client, mac: str) -> bool:
    try:
        return client.lookup_by_mac(mac) is not None
    except omapi.Unreachable:
        return False


def test_a_dropped_connection_is_unreachable_then_reconnects(lab: Lab) -> None:
    mac = new_mac()
    c = lab.start({"file1": (mac, 30)})
    lab.kill()
    # the open connection is lost, and the one more try on a new one finds no dhcpd
    with pytest.raises(omapi.Unreachable, match="cannot connect"):
        c.lookup_by_mac(mac)
    assert lab.server is not None
    lab.server.reload()
    # the next call may connect again
    netns.wait_until(lambda: _found(c, mac), CONNECT_DEADLINE, "lookup")
    assert c.lookup_by_name("file1") == host(lab, "file1", mac, 30)


# --- lease-file replay at restart ----------------------------------------------------


def test_replay_a_an_omapi_host_survives_a_restart(lab: Lab) -> None:
    mac = new_mac()
    lab.start({}).add(host(lab, "web1", mac, 20))
    c = lab.restart()
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 20)
    assert lab.served(mac) == lab.ip(20)


def test_replay_b_a_file_host_deleted_over_omapi_stays_deleted(lab: Lab) -> None:
    mac = new_mac()
    assert lab.start({"web1": (mac, 30)}).delete("web1")
    c = lab.restart()
    assert c.lookup_by_name("web1") is None and c.lookup_by_mac(mac) is None
    assert lab.in_pool(lab.served(mac))


def test_replay_c_deleted_then_readded_over_omapi_serves_the_new_ip(lab: Lab) -> None:
    mac = new_mac()
    c = lab.start({"web1": (mac, 30)})
    assert c.delete("web1")
    c.add(host(lab, "web1", mac, 31))
    c = lab.restart()
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 31)
    assert lab.served(mac) == lab.ip(31)


def test_replay_c2_the_readded_host_loses_to_the_file_at_the_second_restart(lab: Lab) -> None:
    """The first restart rewrites the lease file without the ``deleted`` record (the
    re-added host replaced the deleted one in dhcpd's name table); at the next start
    the file's host comes first and the ``dynamic`` record of that name is refused."""
    mac = new_mac()
    c = lab.start({"web1": (mac, 30)})
    assert c.delete("web1")
    c.add(host(lab, "web1", mac, 31))
    lab.restart()
    assert lab.lease_records("web1") == [
        f"dynamic; hardware ethernet {mac}; fixed-address {lab.ip(31)};"
    ]
    c = lab.restart()
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 30)
    assert lab.served(mac) == lab.ip(30)


def test_replay_d_a_deleted_name_hides_the_file_declaring_it_again(lab: Lab) -> None:
    mac = new_mac()
    assert lab.start({"web1": (mac, 30)}).delete("web1")
    c = lab.restart({"web1": (mac, 32)})  # the file changed, no OMAPI add
    assert c.lookup_by_name("web1") is None and c.lookup_by_mac(mac) is None
    assert lab.in_pool(lab.served(mac))


def test_replay_e_the_file_wins_over_an_omapi_host_of_the_same_name(lab: Lab) -> None:
    mac = new_mac()
    lab.start({}).add(host(lab, "web1", mac, 31))
    c = lab.restart({"web1": (mac, 32)})
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 32)
    assert lab.served(mac) == lab.ip(32)
    # dhcpd warned "host web1: already exists" and wrote no record back: the OMAPI host is gone
    assert lab.lease_records("web1") == []


def test_replay_f_the_deleted_record_is_rewritten_and_holds_a_second_restart(lab: Lab) -> None:
    mac = new_mac()
    assert lab.start({"web1": (mac, 30)}).delete("web1")
    lab.restart()
    assert lab.lease_records("web1") == ["deleted;"]  # the rewritten file keeps it
    c = lab.restart()
    assert c.lookup_by_name("web1") is None and c.lookup_by_mac(mac) is None
    assert lab.in_pool(lab.served(mac))


def test_replay_g_set_ip_on_a_file_host_holds_one_restart_only(lab: Lab) -> None:
    """set_ip on a config-file host writes ``deleted`` and then a record without
    ``dynamic``; the first restart replays both, but its rewritten lease file keeps
    neither (only dynamic hosts and deleted file hosts are written), so the second
    restart serves the config file's address again."""
    mac = new_mac()
    c = lab.start({"web1": (mac, 30)})
    c.set_ip("web1", lab.ip(33))
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 33)
    assert lab.served(mac) == lab.ip(33)
    assert lab.lease_records("web1") == [
        "deleted;",
        f"hardware ethernet {mac}; fixed-address {lab.ip(33)};",
    ]
    c = lab.restart()
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 33)
    assert lab.served(mac) == lab.ip(33)
    assert lab.lease_records("web1") == []
    c = lab.restart()
    assert c.lookup_by_name("web1") == host(lab, "web1", mac, 30)
    assert lab.served(mac) == lab.ip(30)


def test_replay_h_a_second_name_for_a_mac_is_refused(lab: Lab) -> None:
    mac, file_mac = new_mac(), new_mac()
    c = lab.start({"file1": (file_mac, 30)})
    c.add(host(lab, "web1", mac, 31))
    for clash in (host(lab, "web2", mac, 32), host(lab, "web3", file_mac, 33)):
        with pytest.raises(omapi.AlreadyExists, match="object lookup failed"):
            c.add(clash)  # dhcpd's key conflict: the MAC names one host, the name none
        assert c.lookup_by_name(clash.name) is None
    assert lab.served(mac) == lab.ip(31)
    assert lab.served(file_mac) == lab.ip(30)
    c = lab.restart()
    assert c.lookup_by_mac(mac) == host(lab, "web1", mac, 31)


# --- timings (printed, not asserted) -------------------------------------------------


def test_timings(lab: Lab) -> None:
    c = lab.start({})
    hosts = [host(lab, f"t{i}", new_mac(), 0) for i in range(TIMING_ROUNDS)]
    hosts = [omapi.Host(name=h.name, mac=h.mac, ip=lab.ip(2 + i % 90)) for i, h in enumerate(hosts)]
    took: dict[str, list[float]] = {
        "add": [],
        "lookup_by_mac": [],
        "lookup_by_name": [],
        "delete": [],
    }
    for h in hosts:
        started = time.perf_counter()
        c.add(h)
        took["add"].append(time.perf_counter() - started)
    for h in hosts:
        started = time.perf_counter()
        c.lookup_by_mac(h.mac)
        took["lookup_by_mac"].append(time.perf_counter() - started)
        started = time.perf_counter()
        c.lookup_by_name(h.name)
        took["lookup_by_name"].append(time.perf_counter() - started)
    for h in hosts:
        started = time.perf_counter()
        assert c.delete(h.name)
        took["delete"].append(time.perf_counter() - started)
    for what, times in took.items():
        ms = sorted(t * 1000 for t in times)
        print(
            f"OMAPI {what}: median {statistics.median(ms):.2f} ms, p95 {ms[len(ms) * 95 // 100]:.2f} ms, n={len(ms)}"
        )

    offers, known = [], []
    for i in range(OFFER_ROUNDS):
        mac = new_mac()
        lab.client.set_mac(mac)
        started = time.perf_counter()
        c.add(host(lab, f"o{i}", mac, 100 - i))
        address = lab.served(mac)
        offers.append(time.perf_counter() - started)
        assert address == lab.ip(100 - i)
        started = time.perf_counter()
        assert lab.served(mac) == lab.ip(100 - i)
        known.append(time.perf_counter() - started)
    print(
        f"OMAPI add -> udhcpc bound: median {statistics.median(offers) * 1000:.0f} ms"
        f" (a udhcpc run for a host already known: {statistics.median(known) * 1000:.0f} ms)"
    )
