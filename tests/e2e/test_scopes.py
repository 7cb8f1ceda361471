"""End to end: two generators, each rendering one DHCP server's scope (``--server``).

Two ISC dhcpd, each in its own pair of network namespaces, serve different links;
``dhcp_server`` and ``dhcp_server_subnet`` say which subnets each serves. One relay and
one ActiveMQ feed two generators with durable consumer queues of their own. Each dhcpd
gets only its own subnets and reservations, and a real client on each link gets its
reservation. A third subnet (on no link) moves from one server to the other: its
reservations leave one file and enter the other, both accepted by ``dhcpd -t`` and
both servers restarted on them. A change outside a scope leaves that scope's file
untouched, and a server name that does not exist stops the generator at start.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import operator
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.e2e import configs, netns, pipeline
from tests.e2e.conftest import new_mac
from tests.integration import generator_support
from tests.integration.relay_helpers import free_port

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd, pytest.mark.pg, pytest.mark.broker]

CHANGE_DEADLINE = 30.0  # seconds from a commit until a file or a client shows it
START_DEADLINE = 60.0  # seconds for a generator's first render and restart


@pytest.fixture
def commands() -> None:
    require(pipeline.have_commands(), "the cdc-relay and dhcp-generator commands")


@pytest.fixture
def links() -> Iterator[tuple[netns.Link, netns.Link]]:
    """Two links (each two namespaces and a veth) on different networks."""
    ok, missing = netns.available()
    require(ok, missing)
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(netns.link())
        for _ in range(5):  # networks are drawn from the tag: a clash is rare, not impossible
            second = stack.enter_context(netns.link())
            if second.network != first.network:
                yield first, second
                return
        pytest.fail("five links in a row drew the first link's network")


@dataclass(frozen=True, kw_only=True)
class Site:
    """One DHCP server's side: its link, its subnet's reservations, its files."""

    name: str  # the dhcp_server row
    net: netns.Link
    macs: dict[str, ipaddress.IPv4Address]  # reservations on the link: MAC -> address
    workdir: Path

    @property
    def conf(self) -> Path:
        return self.workdir / "dhcpd.conf"

    def text(self) -> str:
        try:
            return self.conf.read_text().lower()
        except FileNotFoundError:
            return ""


def subnet_sql(name: str, network: ipaddress.IPv4Network, pool: tuple[str, str]) -> str:
    gateway = network.network_address + 1
    return (
        "INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time)"
        f" VALUES ('{name}', '{network}', '{gateway}', '{pool[0]}', '{pool[1]}', 600)"
    )


def host_sql(hostname: str, mac: str, ip: ipaddress.IPv4Address) -> str:
    return (
        f"WITH h AS (INSERT INTO host (hostname) VALUES ('{hostname}') RETURNING id)"
        f" INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{ip}' FROM h"
    )


def roaming_network(*taken: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """A /24 of 10.64.0.0/10 that neither link uses; no interface anywhere is on it."""
    start = int(taken[0].network_address)
    for n in range(1, 4):
        network = ipaddress.IPv4Network((0x0A400000 | ((start + n * 256) & 0x3FFF00), 24))
        if network not in taken:
            return network
    raise AssertionError("no free /24 next to the links")


def dhcpd_accepts(conf: Path) -> None:
    done = subprocess.run(
        [netns.DHCPD, "-4", "-t", "-q", "-cf", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"dhcpd -t refused {conf}:\n{done.stdout}{done.stderr}"


class Watch:
    """Waits on files, servers and metrics; a failure shows every daemon's log."""

    def __init__(self) -> None:
        self.daemons: list[pipeline.Daemon] = []
        self.logs: list[Path] = []

    def until(self, condition: Any, what: str, deadline: float = CHANGE_DEADLINE) -> None:
        def check() -> bool:
            for daemon in self.daemons:
                if not daemon.alive():
                    self.fail(f"{daemon.name} exited while waiting for {what}")
            return bool(condition())

        try:
            netns.wait_until(check, deadline, what)
        except netns.HarnessError as exc:
            self.fail(str(exc))

    def fail(self, message: str) -> None:
        tails = [daemon.tail() for daemon in self.daemons]
        for path in self.logs:
            if path.exists():
                tails.append(f"--- {path}:\n{path.read_text(errors='replace')[-3000:]}")
        pytest.fail(f"{message}\n" + "\n".join(tails), pytrace=False)


def metric(port: int, name: str) -> float:
    """A sample of the daemon's metrics; 0 for a labelled counter not counted yet."""
    value = generator_support.metric(port, name)
    return 0.0 if value is None else value


RELEVANT = 'dhcp_generator_messages_total{kind="relevant"}'
PENDING = "dhcp_generator_pending_messages"


def test_each_generator_renders_its_own_scope(
    need_dhcpd: None,
    commands: None,
    db_url: str,
    broker: Any,
    unique_destination: str,
    links: tuple[netns.Link, netns.Link],
    workdir: Path,
) -> None:
    net_a, net_b = links
    roaming = roaming_network(net_a.network, net_b.network)
    tag = uuid.uuid4().hex[:6]
    sites = []
    for label, net in (("a", net_a), ("b", net_b)):
        (workdir / label).mkdir()
        macs = {new_mac(): net.host(n) for n in (10, 20)}
        sites.append(Site(name=f"dhcp-{label}-{tag}", net=net, macs=macs, workdir=workdir / label))
    a, b = sites
    roamers = {new_mac(): roaming.network_address + n for n in (10, 11)}

    statements = [
        subnet_sql("site-a", net_a.network, configs.pool_range(net_a)),
        subnet_sql("site-b", net_b.network, configs.pool_range(net_b)),
        subnet_sql("roaming", roaming, (str(roaming[100]), str(roaming[150]))),
        f"INSERT INTO dhcp_server (name) VALUES ('{a.name}'), ('{b.name}')",
        "INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id)"
        " SELECT s.id, n.id FROM dhcp_server s, subnet n WHERE (s.name, n.name) IN"
        f" (('{a.name}', 'site-a'), ('{a.name}', 'roaming'), ('{b.name}', 'site-b'))",
    ]
    everyone = {**a.macs, **b.macs, **roamers}
    statements += [host_sql(f"h{i}", mac, ip) for i, (mac, ip) in enumerate(everyone.items())]
    pipeline.psql(db_url, ";\n".join(statements))

    watch = Watch()
    ports = {}
    with contextlib.ExitStack() as stack:
        servers = {}
        for site in sites:
            site.conf.write_text(configs.isc(site.net, {}))  # before the generator takes over
            server = stack.enter_context(netns.isc_dhcpd(site.net, site.conf, site.workdir))
            servers[site.name] = (server, server.pid())
            watch.logs.append(server.log)
        watch.daemons.append(
            stack.enter_context(
                pipeline.relay(
                    database_url=db_url,
                    stomp_url=broker.url,
                    destination=unique_destination,
                    log=workdir / "relay.log",
                )
            )
        )
        for site in sites:
            server, _ = servers[site.name]
            consumer = f"scope{uuid.uuid4().hex[:8]}"
            ports[site.name] = free_port()
            args = [
                *pipeline.isc_args(server),
                "--server", site.name,
                "--consumer", consumer,
                "--metrics-port", str(ports[site.name]),
            ]  # fmt: skip
            daemon = pipeline.generator(
                database_url=db_url,
                stomp_url=broker.url,
                destination=unique_destination,
                consumer=consumer,
                args=args,
                log=site.workdir / "generator.log",
            )
            watch.daemons.append(stack.enter_context(daemon))

        # Each file holds its own subnets and reservations, and each dhcpd was restarted
        # on it.
        for site, own, others in (
            (a, {**a.macs, **roamers}, b.macs),
            (b, b.macs, {**a.macs, **roamers}),
        ):
            server, first_pid = servers[site.name]

            def rendered(
                site: Site = site, own: dict[str, Any] = own, server: Any = server
            ) -> bool:
                text = site.text()
                return all(mac in text for mac in own) and server.running()

            watch.until(rendered, f"{site.name}'s first render", START_DEADLINE)
            watch.until(lambda s=server, p=first_pid: s.running() and s.pid() != p, "a restart")
            text = site.text()
            assert not [mac for mac in others if mac in text], f"{site.name} has others' hosts"
            assert f"subnet {site.net.network.network_address} " in text
        assert f"subnet {roaming.network_address} " in a.text()
        assert f"subnet {roaming.network_address} " not in b.text()
        assert f"subnet {net_b.network.network_address} " not in a.text()
        assert f"subnet {net_a.network.network_address} " not in b.text()

        # A real client on each link gets its own reservation from its own dhcpd.
        for site in sites:
            mac, fixed = next((m, ip) for m, ip in site.macs.items() if ip == site.net.host(20))
            client = netns.client(site.net, site.workdir / "client")
            try:
                client.wait_for(
                    functools.partial(operator.eq, str(fixed)), CHANGE_DEADLINE, mac=mac
                )
            except netns.HarnessError as exc:
                watch.fail(f"{site.name}'s client: {exc}")

        # A change in b's scope only: b's file gains it, a's file is not even rewritten.
        before = a.conf.stat().st_mtime_ns, a.text()
        port = ports[a.name]
        assert generator_support.metric(port, PENDING) is not None, "no metrics from a"
        seen = metric(port, RELEVANT)
        newcomer = new_mac()
        pipeline.psql(db_url, host_sql("newcomer", newcomer, net_b.host(30)))
        watch.until(lambda: newcomer in b.text(), "b's file to gain the new host")
        watch.until(
            lambda: metric(port, RELEVANT) >= seen + 2 and metric(port, PENDING) == 0,
            "generator a to handle the host and interface messages",
        )
        assert (a.conf.stat().st_mtime_ns, a.text()) == before, "a change outside a's scope"

        # The roaming subnet moves from a to b (UPDATE), then back (DELETE + INSERT).
        move_to_b = (
            f"UPDATE dhcp_server_subnet SET dhcp_server_id = (SELECT id FROM dhcp_server"
            f" WHERE name = '{b.name}') WHERE subnet_id = (SELECT id FROM subnet"
            " WHERE name = 'roaming')"
        )
        move_to_a = (
            "BEGIN; DELETE FROM dhcp_server_subnet WHERE subnet_id = (SELECT id FROM subnet"
            " WHERE name = 'roaming'); INSERT INTO dhcp_server_subnet SELECT s.id, n.id FROM"
            f" dhcp_server s, subnet n WHERE s.name = '{a.name}' AND n.name = 'roaming'; COMMIT"
        )
        for sql, source, target in ((move_to_b, a, b), (move_to_a, b, a)):
            pipeline.psql(db_url, sql)

            def moved(source: Site = source, target: Site = target) -> bool:
                gone, there = source.text(), target.text()
                return not any(m in gone for m in roamers) and all(m in there for m in roamers)

            watch.until(moved, f"the roaming subnet's hosts to move to {target.name}")
            for site in sites:
                dhcpd_accepts(site.conf)
            assert f"subnet {roaming.network_address} " in target.text()
            assert f"subnet {roaming.network_address} " not in source.text()
            for site in sites:  # each link's own hosts stay where they were
                assert all(mac in site.text() for mac in site.macs)
            # the move restarted both servers on their new files
            for site in sites:
                server, _ = servers[site.name]
                watch.until(server.running, f"{site.name}'s dhcpd to run")


@pytest.mark.parametrize("mode", [[], ["--once"]], ids=["daemon", "once"])
def test_an_unknown_server_is_a_one_line_error_at_start(
    commands: None, db_url: str, broker: Any, workdir: Path, mode: list[str]
) -> None:
    env = {
        "DATABASE_URL": db_url,
        "STOMP_URL": broker.url,
        "PATH": os.environ.get("PATH", ""),
    }
    argv = [pipeline.command("dhcp-generator"), *mode, "--server", "no-such-server"]
    argv += ["--output", str(workdir / "dhcpd.conf")]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "no-such-server" in lines[0]
    assert not (workdir / "dhcpd.conf").exists()
