"""The daemon with real PostgreSQL, ActiveMQ and the relay, all as the operator runs
them: ``cdc-relay`` and ``dhcp-generator`` as subprocesses, changes made in plain SQL."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import services

from tests.integration import generator_support as gs
from tests.integration.inventory import seed

pytestmark = [
    pytest.mark.pg,
    pytest.mark.broker,
]

CONSUMER = "gen"


@dataclass
class Stack:
    db: psycopg.Connection[Any]
    out: Path
    reloads: Path
    metrics_port: int
    args: list[str]
    daemon: gs.Daemon
    tmp: Path
    broker_port: int
    destination: str

    def metric(self, name: str) -> float:
        return gs.metric(self.metrics_port, name) or 0.0

    def once(self, *extra: str) -> str:
        """What a fresh ``--once`` renders now (into a file of its own)."""
        expected = self.tmp / "expected.conf"
        expected.unlink(missing_ok=True)
        db_url = self.args[self.args.index("--database-url") + 1]
        done = gs.run_generator(
            "--once", "--database-url", db_url, "--output", str(expected), *extra
        )
        assert done.returncode == 0, done.stderr
        return expected.read_text()


def start_relay(
    db_url: str, broker_url: str, destination: str, log: Path
) -> subprocess.Popen[bytes]:
    if (
        not os.access(gs.RELAY, os.X_OK)
        or subprocess.run([str(gs.RELAY), "--help"], capture_output=True, check=False).returncode
    ):
        pytest.skip("cdc-relay is not installed yet")
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                str(gs.RELAY),
                "--database-url",
                db_url,
                "--stomp-url",
                broker_url,
                "--destination",
                destination,
                "--fallback-interval",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def stack(
    db_url: str,
    db: psycopg.Connection[Any],
    broker: services.ActiveMQBroker,
    unique_destination: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    seed(db)
    out = tmp_path / "dhcpd.conf"
    reloads = tmp_path / "reloads"
    port = services.free_port()
    args = [
        "--database-url",
        db_url,
        "--stomp-url",
        broker.url,
        "--destination",
        unique_destination,
        "--consumer",
        CONSUMER,
        "--output",
        str(out),
        "--reload-command",
        gs.reload_command(reloads),
        "--metrics-port",
        str(port),
        "--window",
        "0.3",
        "--removal-floor",
        "0",  # the seed has 3 reservations: let the share alone decide
    ]
    daemon = gs.Daemon(args, tmp_path / "daemon.log").start()
    relay: subprocess.Popen[bytes] | None = None
    try:
        # the first render follows the subscription, so the queue exists from here on
        gs.wait_for(out.exists, what=f"the first render\n{daemon.output()}")
        relay = start_relay(db_url, broker.url, unique_destination, tmp_path / "relay.log")
        yield Stack(db, out, reloads, port, args, daemon, tmp_path, broker.port, unique_destination)
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(timeout=gs.DEADLINE)
        code = daemon.terminate() if daemon.alive() else None
        assert code in (0, None), daemon.output()


def test_insert_update_delete_show_up(stack: Stack) -> None:
    assert gs.reload_count(stack.reloads) == 1
    stack.db.execute(
        "INSERT INTO host (id, hostname) VALUES (10, 'new1');"
        "INSERT INTO interface (host_id, mac, ip) VALUES (10, '52:54:00:00:00:10', '10.20.0.60')"
    )
    gs.wait_for(lambda: "fixed-address 10.20.0.60;" in stack.out.read_text(), what="INSERT")
    stack.db.execute("UPDATE interface SET ip = '10.20.0.61' WHERE host_id = 10")
    gs.wait_for(lambda: "fixed-address 10.20.0.61;" in stack.out.read_text(), what="UPDATE")
    assert "10.20.0.60;" not in stack.out.read_text()
    stack.db.execute("DELETE FROM host WHERE id = 10")
    gs.wait_for(lambda: "new1" not in stack.out.read_text(), what="DELETE")
    assert stack.out.read_text() == stack.once()
    assert gs.reload_count(stack.reloads) == 4
    assert stack.metric('dhcp_generator_messages_total{kind="relevant"}') >= 3
    assert stack.metric("dhcp_generator_reservations") == 3


def test_unrelated_change_and_bad_messages_cause_no_reload(stack: Stack) -> None:
    stack.db.execute(
        "INSERT INTO service (name) VALUES ('ntp'); UPDATE service SET name = 'ntp2' WHERE name = 'ntp'"
    )
    gs.wait_for(
        lambda: stack.metric('dhcp_generator_messages_total{kind="unrelated"}') >= 2,
        what="the unrelated messages",
    )
    publisher = gs.Publisher(stack.broker_port, stack.destination)
    try:
        publisher.send("", body="not json {")
        publisher.send("no_such_table", body="x" * 200_000)
        publisher.send("host")  # txid 1: long visible to the applied snapshot

    finally:
        publisher.close()
    gs.wait_for(
        lambda: stack.metric('dhcp_generator_messages_total{kind="bad"}') >= 1,
        what="the bad message",
    )
    # a table no render reads (as a DBA tracking a new table): acknowledged quietly
    gs.wait_for(
        lambda: stack.metric('dhcp_generator_messages_total{kind="unrelated"}') >= 3,
        what="the message about another table",
    )
    assert "names no table" in stack.daemon.output()
    assert "no_such_table" not in stack.daemon.output()
    gs.wait_for(lambda: stack.metric("dhcp_generator_messages_covered_total") >= 1)
    # bad messages are doorbells: at most a render that finds nothing changed
    gs.wait_for(lambda: stack.metric('dhcp_generator_renders_total{result="unchanged"}') >= 1)
    assert stack.daemon.alive()
    assert gs.reload_count(stack.reloads) == 1
    assert stack.metric('dhcp_generator_renders_total{result="applied"}') == 1


def test_wipe_guard_keeps_the_config(stack: Stack) -> None:
    before = stack.out.read_text()
    stack.db.execute("DELETE FROM host")
    gs.wait_for(
        lambda: stack.metric('dhcp_generator_renders_total{result="refused"}') >= 1,
        what="the refused render",
    )
    assert stack.out.read_text() == before
    assert gs.reload_count(stack.reloads) == 1
    assert "refusing to write" in stack.daemon.output()


def test_sigkill_mid_burst_then_restart_converges(stack: Stack) -> None:
    def burst(first: int, last: int) -> None:
        for n in range(first, last):
            with stack.db.transaction():
                stack.db.execute(
                    "INSERT INTO host (id, hostname) VALUES (%s, %s)", [1000 + n, f"burst{n}"]
                )
                stack.db.execute(
                    "INSERT INTO interface (host_id, mac, ip) VALUES (%s, %s, %s)",
                    [1000 + n, f"52:54:00:01:{n // 256:02x}:{n % 256:02x}", f"10.21.0.{20 + n}"],
                )

    burst(0, 60)
    gs.wait_for(lambda: gs.reload_count(stack.reloads) >= 2, what="a render during the burst")
    burst(60, 120)
    stack.daemon.kill()
    burst(120, 200)
    stack.db.execute("UPDATE interface SET ip = '10.21.0.250' WHERE host_id = 1005")
    stack.db.execute("DELETE FROM host WHERE id = 1007")
    stack.daemon.start()
    expected = stack.once()
    assert expected.count("\nhost ") == 3 + 199
    gs.wait_for(lambda: stack.out.read_text() == expected, what="the restarted daemon to converge")
    leftovers = [p.name for p in stack.tmp.iterdir() if p.name.endswith(".candidate")]
    assert leftovers == []
