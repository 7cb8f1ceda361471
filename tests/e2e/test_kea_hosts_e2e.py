"""End to end with Kea's hosts database: reservation changes served with no reconfiguration.

psql on the machine database -> triggers -> cdc-relay -> ActiveMQ -> dhcp-generator ->
rows of Kea's PostgreSQL ``hosts`` table -> kea-dhcp4 (in a network namespace, reading
them per lookup through the test cluster's unix socket) -> a busybox udhcpc in another
namespace. An insert, an IP change, a delete and a re-add each reach the client while
Kea's log shows no new ``DHCP4_CONFIG_COMPLETE``; a restarted Kea serves the same; a
subnet change still arrives by ``config-reload``.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.e2e import configs, netns, pipeline
from tests.e2e.conftest import new_mac
from tests.integration import kea_hosts_support as khs

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd, pytest.mark.pg, pytest.mark.broker]

CHANGE_DEADLINE = 30.0  # seconds from a commit until the client must see it
START_DEADLINE = 60.0  # seconds for the generator's first render and reload
CONFIG_COMPLETE = "DHCP4_CONFIG_COMPLETE"
SEED_HOSTS = (10, 11, 12)
NEW_POOL = (160, 200)  # host numbers of the pool after the subnet change


@pytest.fixture
def kea_db(pg_cluster: Any) -> Iterator[tuple[str, str]]:
    """A Kea hosts database: the generator's URL (TCP) and Kea's (the unix socket, which
    the server namespace shares with us through the file system)."""
    require(khs.have_kea_admin(), "kea-admin (apt-get install kea-admin)")
    khs.init_template(pg_cluster.url(), "127.0.0.1", pg_cluster.port)
    maker = khs.databases(pg_cluster.url())
    name = next(maker)()
    writer = khs.url(pg_cluster.url(), name, khs.WRITER)
    reader = (
        f"postgresql://{khs.READER}@/{name}?host={pg_cluster.socket_dir}&port={pg_cluster.port}"
    )
    yield writer, reader
    next(maker, None)


@pytest.fixture
def inventory(db_url: str, net: netns.Link) -> dict[str, int]:
    start, end = configs.pool_range(net)
    pipeline.psql(
        db_url,
        "INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time)"
        f" VALUES ('e2e-kea', '{net.network}', '{net.server_ip}', '{start}', '{end}', 600)",
    )
    seeds = {new_mac(): n for n in SEED_HOSTS}
    for i, (mac, n) in enumerate(seeds.items()):
        pipeline.psql(
            db_url,
            f"WITH h AS (INSERT INTO host (hostname) VALUES ('kseed{i}') RETURNING id)"
            f" INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{net.host(n)}' FROM h",
        )
    return seeds


def completes(log: Path) -> int:
    """How often Kea logged a (re)configuration."""
    return log.read_text(errors="replace").count(CONFIG_COMPLETE) if log.exists() else 0


def test_kea_serves_reservation_changes_without_reconfiguration(
    need_kea: None,
    db_url: str,
    net: netns.Link,
    workdir: Path,
    client: netns.Client,
    inventory: dict[str, int],
    kea_db: tuple[str, str],
    broker: Any,
    unique_destination: str,
) -> None:
    require(pipeline.have_commands(), "the cdc-relay and dhcp-generator commands")
    writer, reader = kea_db
    paths = netns.kea_paths(workdir)
    paths["conf"].write_text(configs.kea(net, workdir, {}))  # Kea's own file to start with
    log = paths["log"]
    args = [*pipeline.kea_args(workdir), "--kea-hosts-database", writer]
    args += ["--kea-hosts-reader", reader]
    relay = pipeline.relay(
        database_url=db_url, stomp_url=broker.url, destination=unique_destination,
        log=workdir / "relay.log",
    )  # fmt: skip
    generator = pipeline.generator(
        database_url=db_url, stomp_url=broker.url, destination=unique_destination,
        consumer=f"e2ekea{uuid.uuid4().hex[:8]}", args=args, log=workdir / "generator.log",
    )  # fmt: skip
    with relay as relay_daemon, generator as generator_daemon:
        daemons = [relay_daemon, generator_daemon]

        def fail(message: str) -> None:
            logs = [d.tail() for d in daemons]
            logs.append(f"--- {log}:\n{log.read_text(errors='replace')[-3000:]}")
            pytest.fail(f"{message}\n" + "\n".join(logs), pytrace=False)

        def expect(predicate: Callable[[str | None], bool], what: str) -> str | None:
            try:
                address = client.wait_for(predicate, CHANGE_DEADLINE)
            except netns.HarnessError as exc:
                fail(f"{what}: {exc}")
            print(f"{what}: {address}")
            return address

        mac = new_mac()
        fixed, moved, again = (str(net.host(n)) for n in (20, 21, 22))
        with netns.kea_dhcp4(net, workdir) as server:

            def started() -> bool:
                if not all(d.alive() for d in daemons):
                    fail("a daemon exited")
                config = server.command("config-get")["arguments"]["Dhcp4"]
                rows = khs.table_rows(writer)
                reading = "hosts-database" in config or "hosts-databases" in config
                return reading and len(rows) == len(inventory)

            try:
                netns.wait_until(started, START_DEADLINE, "Kea reading the hosts database")
            except netns.HarnessError as exc:
                fail(str(exc))
            at_start = completes(log)
            assert at_start >= 1

            client.set_mac(mac)
            expect(lambda a: configs.in_pool(net, a), "unknown MAC: a pool address")
            pipeline.psql(
                db_url,
                "WITH h AS (INSERT INTO host (hostname) VALUES ('kea-client') RETURNING id)"
                f" INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{fixed}' FROM h",
            )
            expect(lambda a: a == fixed, f"inserted: {fixed}")
            pipeline.psql(db_url, f"UPDATE interface SET ip = '{moved}' WHERE mac = '{mac}'")
            expect(lambda a: a == moved, f"IP changed: {moved}")
            pipeline.psql(db_url, f"DELETE FROM interface WHERE mac = '{mac}'")
            address = expect(lambda a: configs.in_pool(net, a), "deleted: a pool address")
            assert address not in (fixed, moved)
            pipeline.psql(
                db_url,
                "INSERT INTO interface (host_id, mac, ip) SELECT id, "
                f"'{mac}', '{again}' FROM host WHERE hostname = 'kea-client'",
            )
            expect(lambda a: a == again, f"re-added: {again}")
            assert completes(log) == at_start, "Kea was reconfigured for a reservation change"

        # A restarted Kea reads the same file and table, and gives the same answer.
        with netns.kea_dhcp4(net, workdir):
            expect(lambda a: a == again, f"after a Kea restart: {again}")
            restarted = completes(log)
            assert restarted == at_start + 1

            # A subnet change goes through the file and config-reload; the rows stay.
            first, last = (net.host(n) for n in NEW_POOL)
            pipeline.psql(
                db_url,
                f"UPDATE subnet SET pool_start = '{first}', pool_end = '{last}'"
                " WHERE name = 'e2e-kea'",
            )
            client.set_mac(new_mac())
            expect(
                lambda a: (
                    a is not None and int(first) <= int(ipaddress.IPv4Address(a)) <= int(last)
                ),
                "a new MAC after the pool moved",
            )
            assert completes(log) == restarted + 1
            client.set_mac(mac)
            expect(lambda a: a == again, f"reserved, after the config-reload: {again}")
