"""Faults: broker and database outages, a refused render, a crash between write and
ack, a Kea that refuses a new file. The config in place stays, messages stay unacked
until a render covering them succeeds, and nothing is reloaded without need."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import services

from generator import metrics
from tests.integration import generator_support as gs
from tests.integration import relay_helpers
from tests.integration.conftest import SpawnRelay
from tests.integration.inventory import HOSTS, seed

pytestmark = pytest.mark.pg

NEW_HOST = (
    "INSERT INTO host (id, hostname) VALUES (20, 'late1');"
    "INSERT INTO interface (host_id, mac, ip) VALUES (20, '52:54:00:00:00:20', '10.20.0.70')"
)


def daemon_args(db_url: str, stomp_url: str, destination: str, out: Path, port: int) -> list[str]:
    return [
        "--database-url",
        db_url,
        "--stomp-url",
        stomp_url,
        "--destination",
        destination,
        "--consumer",
        "faults",
        "--output",
        str(out),
        "--metrics-port",
        str(port),
        "--window",
        "0.2",
    ]


@pytest.fixture
def running() -> Iterator[list[gs.Daemon]]:
    started: list[gs.Daemon] = []
    yield started
    for daemon in started:
        if daemon.alive():
            assert daemon.terminate() == 0, daemon.output()


@pytest.mark.broker
@pytest.mark.slow
def test_broker_restart_renders_on_reconnect(
    db_url: str,
    db: psycopg.Connection[object],
    broker_factory: Callable[[], services.ActiveMQBroker],
    unique_destination: str,
    tmp_path: Path,
    running: list[gs.Daemon],
) -> None:
    seed(db)
    broker = broker_factory()
    out = tmp_path / "dhcpd.conf"
    port = services.free_port()
    args = daemon_args(db_url, broker.url, unique_destination, out, port)
    daemon = gs.Daemon(args, tmp_path / "daemon.log").start()
    running.append(daemon)
    gs.wait_for(out.exists, what="the first render")
    before = out.read_text()

    broker.stop()
    gs.wait_for(lambda: "lost the broker connection" in daemon.output(), what="the disconnect")
    db.execute(NEW_HOST)  # no relay runs: no message will ever announce this change
    assert daemon.alive()
    assert out.read_text() == before  # the last good config stays

    broker.start()
    gs.wait_for(
        lambda: "10.20.0.70" in out.read_text(), deadline=60, what="the render on reconnect"
    )
    assert daemon.output().count("subscribed to") == 2


@pytest.mark.broker
@pytest.mark.slow
def test_database_outage_keeps_message_until_render_succeeds(
    private_pg: services.PostgresCluster,
    broker: services.ActiveMQBroker,
    unique_destination: str,
    tmp_path: Path,
    running: list[gs.Daemon],
) -> None:
    db_url = private_pg.url("machinedb")
    with psycopg.connect(db_url, autocommit=True) as conn:
        seed(conn)
    out = tmp_path / "dhcpd.conf"
    port = services.free_port()
    args = daemon_args(db_url, broker.url, unique_destination, out, port)
    daemon = gs.Daemon(args, tmp_path / "daemon.log").start()
    running.append(daemon)
    gs.wait_for(out.exists, what="the first render")
    before = out.read_text()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(NEW_HOST)

    private_pg.stop()
    send_without_txid(broker, unique_destination, "interface", "INSERT")
    gs.wait_for(
        lambda: (
            (gs.metric(port, 'dhcp_generator_renders_total{result="db_unavailable"}') or 0) >= 1
        ),
        what="a failed render",
    )
    assert gs.metric(port, "dhcp_generator_pending_messages") == 1  # not acknowledged
    assert out.read_text() == before

    private_pg.start()
    gs.wait_for(lambda: "10.20.0.70" in out.read_text(), deadline=60, what="the retried render")
    gs.wait_for(lambda: gs.metric(port, "dhcp_generator_pending_messages") == 0, what="the ack")
    assert daemon.alive()


@pytest.mark.broker
@pytest.mark.slow
def test_refused_render_keeps_the_message_pending(
    db_url: str,
    db: psycopg.Connection[object],
    broker: services.ActiveMQBroker,
    unique_destination: str,
    tmp_path: Path,
    running: list[gs.Daemon],
) -> None:
    seed(db)
    out = tmp_path / "dhcpd.conf"
    reloads = tmp_path / "reloads"
    port = services.free_port()
    args = daemon_args(db_url, broker.url, unique_destination, out, port)
    args += ["--reload-command", gs.reload_command(reloads), "--removal-floor", "0"]
    daemon = gs.Daemon(args, tmp_path / "daemon.log").start()
    running.append(daemon)
    gs.wait_for(out.exists, what="the first render")
    before = out.read_text()

    db.execute("DELETE FROM host")  # every reservation would go: the wipe guard refuses
    send_without_txid(broker, unique_destination, "host", "DELETE")
    gs.wait_for(
        lambda: (gs.metric(port, 'dhcp_generator_renders_total{result="refused"}') or 0) >= 1,
        what="the refused render",
    )
    assert gs.metric(port, "dhcp_generator_pending_messages") == 1  # not acknowledged
    assert out.read_text() == before
    assert gs.reload_count(reloads) == 1
    assert "refusing to write" in daemon.output()

    db.execute(HOSTS)  # the retried render finds the file current, and acks
    gs.wait_for(
        lambda: gs.metric(port, "dhcp_generator_pending_messages") == 0,
        deadline=60,
        what="the ack after a successful render",
    )
    assert gs.metric(port, 'dhcp_generator_renders_total{result="unchanged"}') == 1
    assert out.read_text() == before
    assert gs.reload_count(reloads) == 1


CHANGES_WHILE_DOWN = [
    "INSERT INTO host (id, hostname) VALUES (30, 'crash1');"
    "INSERT INTO interface (host_id, mac, ip) VALUES (30, '52:54:00:00:00:30', '10.20.0.30')",
    "UPDATE interface SET ip = '10.20.0.31' WHERE host_id = 30",
    "UPDATE interface SET ip = '10.20.0.77' WHERE id = 3",
    "DELETE FROM host WHERE id = 30",
    "UPDATE host SET description = 'rack 4' WHERE id = 1",
]


@pytest.mark.broker
@pytest.mark.slow
def test_redelivery_after_a_crash_between_write_and_ack_reloads_nothing(
    db_url: str,
    db: psycopg.Connection[object],
    broker: services.ActiveMQBroker,
    unique_destination: str,
    tmp_path: Path,
    running: list[gs.Daemon],
    spawn_relay: SpawnRelay,
) -> None:
    """A generator killed after it wrote and reloaded a file, before it acked the
    messages that file covers. The same state, reached deterministically: the changes
    wait in the queue (nobody consumes), a ``--once`` with the same reload command
    writes and reloads the file, then the daemon starts and gets them all delivered."""
    seed(db)
    out = tmp_path / "dhcpd.conf"
    reloads = tmp_path / "reloads"
    reload_args = ["--reload-command", gs.reload_command(reloads)]

    def args(port: int) -> list[str]:
        return [*daemon_args(db_url, broker.url, unique_destination, out, port), *reload_args]

    first = gs.Daemon(args(services.free_port()), tmp_path / "first.log").start()
    running.append(first)
    gs.wait_for(out.exists, what="the first render")  # subscribed: the queue exists now
    assert first.terminate() == 0, first.output()
    assert gs.reload_count(reloads) == 1

    for statement in CHANGES_WHILE_DOWN:
        db.execute(statement)
    changes = relay_helpers.outbox_count(db_url)
    assert changes >= len(CHANGES_WHILE_DOWN)
    spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
    gs.wait_for(lambda: relay_helpers.outbox_count(db_url) == 0, what="the relay to publish")

    done = gs.run_generator("--once", "--database-url", db_url, "--output", str(out), *reload_args)
    assert done.returncode == 0, done.stderr
    assert gs.reload_count(reloads) == 2
    written = out.read_text()
    assert "10.20.0.77" in written and "crash1" not in written
    written_stat = out.stat()

    port = services.free_port()
    second = gs.Daemon(args(port), tmp_path / "second.log").start()
    running.append(second)

    def sample(name: str) -> float:
        return gs.metric(port, name) or 0.0

    # Before its first render the daemon acks nothing: all received and none pending
    # means every message was covered by a render or the snapshot behind it.
    gs.wait_for(
        lambda: (
            sample('dhcp_generator_messages_total{kind="relevant"}') == changes
            and gs.metric(port, "dhcp_generator_pending_messages") == 0
        ),
        what=f"all {changes} redelivered messages acknowledged",
    )
    renders = {
        result: sample(f'dhcp_generator_renders_total{{result="{result}"}}')
        for result in metrics.RESULTS
    }
    # one render (the one every start does) found the same bytes; the rest were covered
    assert renders == {**dict.fromkeys(metrics.RESULTS, 0.0), "unchanged": 1.0}, renders
    assert sample("dhcp_generator_messages_covered_total") <= changes
    assert gs.reload_count(reloads) == 2
    assert out.read_text() == written
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == (
        written_stat.st_ino,
        written_stat.st_mtime_ns,
    )
    assert second.alive()


def test_a_small_lab_deletes_its_hosts_and_a_forced_wipe_lets_the_daemon_carry_on(
    db_url: str,
    db: psycopg.Connection[object],
    broker: services.ActiveMQBroker,
    unique_destination: str,
    tmp_path: Path,
    running: list[gs.Daemon],
) -> None:
    """The default floor lets a lab of three delete them all; past the floor the guard
    refuses, the operator forces it once with the same settings, and the daemon, which
    kept retrying, finds the file current and acknowledges on its own."""
    seed(db)
    out = tmp_path / "dhcpd.conf"
    port = services.free_port()
    args = daemon_args(db_url, broker.url, unique_destination, out, port)
    daemon = gs.Daemon(args, tmp_path / "daemon.log").start()
    running.append(daemon)
    gs.wait_for(lambda: out.exists() and out.read_text().count("\nhost ") == 3)

    db.execute("DELETE FROM host")  # 3 of 3 go: within the default floor
    send_without_txid(broker, unique_destination, "host", "DELETE")
    gs.wait_for(lambda: out.read_text().count("\nhost ") == 0, what="the emptied file")
    assert "refusing" not in daemon.output()

    db.execute(
        "INSERT INTO host (id, hostname) SELECT i, 'n' || i FROM generate_series(100, 139) i;"
        "INSERT INTO interface (host_id, mac, ip) SELECT i, ('02:00:00:00:01:' || to_hex(i))::macaddr,"
        " ('10.20.0.' || (i - 80))::inet FROM generate_series(100, 139) i"
    )
    send_without_txid(broker, unique_destination, "interface", "INSERT")
    gs.wait_for(lambda: out.read_text().count("\nhost ") == 40, what="40 reservations")
    db.execute("DELETE FROM host")  # 40 of 40: past the floor and the share
    send_without_txid(broker, unique_destination, "host", "DELETE")
    gs.wait_for(
        lambda: (gs.metric(port, 'dhcp_generator_renders_total{result="refused"}') or 0) >= 1,
        what="the refused render",
    )
    assert "--once --force" in daemon.output()
    forced = gs.run_generator("--once", "--force", *args[:2], "--output", str(out))
    assert forced.returncode == 0, forced.stderr
    assert out.read_text().count("\nhost ") == 0
    gs.wait_for(
        lambda: gs.metric(port, "dhcp_generator_pending_messages") == 0,
        deadline=60,
        what="the daemon acknowledging after the forced write",
    )
    assert daemon.alive()


def test_dry_run_reports_what_a_real_run_would_refuse(
    db_url: str, db: psycopg.Connection[object], tmp_path: Path
) -> None:
    seed(db)
    out = tmp_path / "dhcpd.conf"
    args = ["--database-url", db_url, "--output", str(out), "--reload-command", "false"]
    args += ["--removal-floor", "0"]
    assert gs.run_generator("--once", *args[:4]).returncode == 0  # no reload command
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    db.execute("DELETE FROM host WHERE id = 1")  # 2 of 3 reservations would go
    dry = gs.run_generator("--dry-run", *args)
    assert dry.returncode == 1, dry.stderr
    assert "-  fixed-address 10.20.0.10;" in dry.stdout
    last = dry.stderr.strip().splitlines()[-1]
    assert last.startswith("dhcp-generator: dry run: a real run would refuse this render")
    assert "would remove 2 of 3 reservations" in last and "--force" in last
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files

    forced = gs.run_generator("--dry-run", "--force", *args)
    assert forced.returncode == 0, forced.stderr
    assert "a real run would write and reload" in forced.stderr
    assert "dhcpd accepts it" in forced.stderr or "not checked" in forced.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def send_without_txid(
    broker: services.ActiveMQBroker, destination: str, table: str, op: str
) -> None:
    """A change message whose body has no txid: nothing tells the daemon it has seen it."""
    publisher = gs.Publisher(broker.port, destination)
    try:
        publisher.send(table, op, body=json.dumps({"table": table}))
    finally:
        publisher.close()
