"""Broker and database outages: the daemon keeps the last config, retries with
back-off, and catches up from the database once the service is back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import services

from tests.integration import generator_support as gs
from tests.integration.inventory import seed

pytestmark = [
    pytest.mark.pg,
    pytest.mark.broker,
    pytest.mark.slow,
]

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
    publisher = gs.Publisher(broker.port, unique_destination)
    try:
        # no txid in the body: nothing tells the daemon it has seen this change
        publisher.send("interface", "INSERT", body='{"table": "interface"}')
    finally:
        publisher.close()
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
