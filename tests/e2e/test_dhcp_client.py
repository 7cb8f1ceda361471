"""End to end: a row written with psql reaches a real DHCP client.

PostgreSQL -> triggers -> outbox -> cdc-relay -> ActiveMQ -> dhcp-generator ->
dhcpd.conf / kea-dhcp4.conf -> reload -> a busybox udhcpc in another network namespace.
Everything is real and runs as the installed commands; only the network is private (two
namespaces joined by a veth pair, whose subnet is the subnet in the database).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e import configs, netns, pipeline
from tests.e2e.conftest import new_mac

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd, pytest.mark.pg, pytest.mark.broker]

CHANGE_DEADLINE = 30.0  # seconds from a commit until the client must see it
START_DEADLINE = 60.0  # seconds for the generator's first render and reload
SEED_HOSTS = (10, 11, 12)  # other reservations, so one deletion is a small share


@pytest.fixture
def commands() -> None:
    require(pipeline.have_commands(), "the cdc-relay and dhcp-generator commands")


@pytest.fixture
def inventory(db_url: str, net: netns.Link) -> dict[str, int]:
    """The veth's subnet with a pool, and a few hosts; returns their MAC -> host number."""
    start, end = configs.pool_range(net)
    pipeline.psql(
        db_url,
        "INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time)"
        f" VALUES ('e2e-veth', '{net.network}', '{net.server_ip}', '{start}', '{end}', 600)",
    )
    seeds = {new_mac(): n for n in SEED_HOSTS}
    for i, (mac, n) in enumerate(seeds.items()):
        pipeline.psql(
            db_url,
            f"WITH h AS (INSERT INTO host (hostname) VALUES ('seed{i}') RETURNING id)"
            f" INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{net.host(n)}' FROM h",
        )
    return seeds


@pytest.fixture
def relay(
    commands: None, db_url: str, broker, unique_destination: str, workdir: Path
) -> Iterator[pipeline.Daemon]:
    with pipeline.relay(
        database_url=db_url,
        stomp_url=broker.url,
        destination=unique_destination,
        log=workdir / "relay.log",
    ) as daemon:
        yield daemon


@pytest.fixture
def start_generator(
    db_url: str, broker, unique_destination: str, workdir: Path
) -> Iterator[Callable[[list[str]], pipeline.Daemon]]:
    """Start dhcp-generator with format flags; its own durable queue; stopped at the end."""
    stack: list[object] = []

    def start(args: list[str]) -> pipeline.Daemon:
        context = pipeline.generator(
            database_url=db_url,
            stomp_url=broker.url,
            destination=unique_destination,
            consumer=f"e2e{uuid.uuid4().hex[:8]}",
            args=args,
            log=workdir / "generator.log",
        )
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def fail_with_logs(message: str, daemons: list[pipeline.Daemon], *extra: Path) -> None:
    logs = [d.tail() for d in daemons]
    for path in extra:
        if path.exists():
            logs.append(f"--- {path}:\n{path.read_text(errors='replace')[-3000:]}")
    pytest.fail(f"{message}\n" + "\n".join(logs), pytrace=False)


def expect(
    client: netns.Client,
    predicate: Callable[[str | None], bool],
    what: str,
    daemons: list[pipeline.Daemon],
    *logs: Path,
) -> str | None:
    started = time.monotonic()
    try:
        address = client.wait_for(predicate, CHANGE_DEADLINE)
        print(f"{what}: {address} after {time.monotonic() - started:.2f} s")
        return address
    except netns.HarnessError as exc:
        fail_with_logs(f"{what}: {exc}", daemons, *logs)
    return None


def wait_for_file(
    path: Path, macs: list[str], daemons: list[pipeline.Daemon], ready: Callable[[], bool]
) -> None:
    """The generator's first render is in place (all ``macs`` in it) and the server runs."""

    def rendered() -> bool:
        for daemon in daemons:
            if not daemon.alive():
                fail_with_logs(f"{daemon.name} exited", daemons)
        try:
            text = path.read_text().lower()
        except FileNotFoundError:
            return False
        return all(mac in text for mac in macs) and ready()

    try:
        netns.wait_until(rendered, START_DEADLINE, f"the first render in {path}")
    except netns.HarnessError as exc:
        fail_with_logs(str(exc), daemons, path)


def follow_one_host(
    db_url: str,
    net: netns.Link,
    client: netns.Client,
    daemons: list[pipeline.Daemon],
    *logs: Path,
) -> None:
    """Insert, move and delete one client's reservation with psql; the client follows."""
    mac = new_mac()
    fixed, moved = str(net.host(20)), str(net.host(21))
    client.set_mac(mac)
    # Unknown to the database: a pool address, which also proves the server serves.
    expect(client, lambda a: configs.in_pool(net, a), "unknown MAC, pool", daemons, *logs)

    pipeline.psql(
        db_url,
        "WITH h AS (INSERT INTO host (hostname) VALUES ('e2e-client') RETURNING id)"
        f" INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{fixed}' FROM h",
    )
    expect(client, lambda a: a == fixed, f"inserted, expected {fixed}", daemons, *logs)

    pipeline.psql(db_url, f"UPDATE interface SET ip = '{moved}' WHERE mac = '{mac}'")
    expect(client, lambda a: a == moved, f"updated, expected {moved}", daemons, *logs)

    pipeline.psql(db_url, f"DELETE FROM interface WHERE mac = '{mac}'")
    address = expect(
        client, lambda a: configs.in_pool(net, a), "deleted, expected a pool address",
        daemons, *logs,
    )  # fmt: skip
    assert address not in (fixed, moved)


def test_isc_dhcpd_serves_what_psql_wrote(
    need_dhcpd: None,
    db_url: str,
    net: netns.Link,
    workdir: Path,
    client: netns.Client,
    inventory: dict[str, int],
    relay: pipeline.Daemon,
    start_generator: Callable[[list[str]], pipeline.Daemon],
) -> None:
    conf = workdir / "dhcpd.conf"
    conf.write_text(configs.isc(net, {}))  # what dhcpd runs before the generator takes over
    with netns.isc_dhcpd(net, conf, workdir) as server:
        first_pid = server.pid()
        generator = start_generator(pipeline.isc_args(server))
        daemons = [relay, generator]
        wait_for_file(
            conf, list(inventory), daemons, lambda: server.running() and server.pid() != first_pid
        )
        follow_one_host(db_url, net, client, daemons, server.log)


def test_kea_serves_what_psql_wrote(
    need_kea: None,
    db_url: str,
    net: netns.Link,
    workdir: Path,
    client: netns.Client,
    inventory: dict[str, int],
    relay: pipeline.Daemon,
    start_generator: Callable[[list[str]], pipeline.Daemon],
) -> None:
    paths = netns.kea_paths(workdir)
    paths["conf"].write_text(configs.kea(net, workdir, {}))  # Kea's own file to start with
    private = pipeline.kea_lease_flag() is None  # the generator renders Kea's packaged path
    with netns.kea_dhcp4(net, workdir, private_var_lib=private) as server:
        generator = start_generator(pipeline.kea_args(workdir))
        daemons = [relay, generator]

        def reloaded() -> bool:
            subnets = server.command("config-get")["arguments"]["Dhcp4"]["subnet4"]
            return sum(len(s.get("reservations", [])) for s in subnets) == len(inventory)

        wait_for_file(paths["conf"], list(inventory), daemons, reloaded)
        follow_one_host(db_url, net, client, daemons, server.log)
