"""The relay as a real subprocess against real PostgreSQL and ActiveMQ: every outbox id
written reaches the broker (duplicates allowed, counted), whatever fails in between."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from typing import Any

import psycopg
import pytest

from tests.conftest import require
from tests.integration import relay_helpers as h
from tests.integration.conftest import SpawnRelay

pytestmark = [
    pytest.mark.pg,
    pytest.mark.broker,
]

DELIVERY_DEADLINE = 90.0  # seconds


def assert_all_delivered(db_url: str, consumer: h.Consumer) -> None:
    written = h.written_ids(db_url)
    assert written, "the test wrote nothing"
    h.wait_until(lambda: written <= consumer.ids(), deadline=DELIVERY_DEADLINE, what="every change")
    assert consumer.ids() == written
    h.wait_until(lambda: h.outbox_count(db_url) == 0, deadline=30, what="an empty outbox")
    print(f"{len(written)} changes delivered, {consumer.duplicates()} duplicates")


def consumed_at_least(consumer: h.Consumer, n: int) -> None:
    h.wait_until(lambda: len(consumer.ids()) >= n, deadline=60, what=f"{n} consumed changes")


def test_burst_from_four_writers(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    """(a) 5,000 changes from 4 concurrent writers."""
    h.record_written(db_url)
    with h.consumer(broker.port, unique_destination) as consumer:
        spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
        h.Writers(db_url).start().join()
        assert_all_delivered(db_url, consumer)


@pytest.mark.slow
def test_relay_killed_mid_burst_and_restarted(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    """(b) SIGKILL in the middle of the burst, then a new relay."""
    h.record_written(db_url)
    with h.consumer(broker.port, unique_destination) as consumer:
        relay = spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
        writers = h.Writers(db_url).start()
        consumed_at_least(consumer, 1500)
        relay.kill()
        spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
        writers.join()
        assert_all_delivered(db_url, consumer)


@pytest.mark.slow
def test_broker_stopped_for_ten_seconds_mid_burst(
    db_url: str, broker_factory: Any, spawn_relay: SpawnRelay
) -> None:
    """(c) The broker (persistent store) stops for 10 s and starts again."""
    h.record_written(db_url)
    private = broker_factory()
    # The private broker's own change topic and its declared consumer queue: a queue
    # created on the fly may not exist again before the relay publishes after the
    # restart, and a VirtualTopic drops what no queue takes (why deployments declare them).
    topic = "/topic/VirtualTopic.machinedb.changes"
    with h.consumer(private.port, topic, name="dhcp") as consumer:
        spawn_relay(db_url=db_url, stomp_url=private.url, destination=topic)
        writers = h.Writers(db_url).start()
        consumed_at_least(consumer, 1500)
        private.stop()
        time.sleep(10)  # the outage itself, not a synchronisation
        private.start()
        writers.join()
        h.wait_until(lambda: h.outbox_count(db_url) == 0, deadline=90, what="an empty outbox")
    # Every row left the outbox, so the broker confirmed it stored each one. A fresh
    # consumer on the same durable queue collects whatever the first one missed while
    # its own connection to the restarted broker was being re-established.
    written = h.written_ids(db_url)
    with h.consumer(private.port, topic, name="dhcp") as second:
        h.wait_until(
            lambda: written <= consumer.ids() | second.ids(),
            deadline=DELIVERY_DEADLINE,
            what="every change",
        )
    assert consumer.ids() | second.ids() == written


@pytest.mark.slow
def test_postgres_restarted_mid_burst(
    private_pg: Any, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    """(d) PostgreSQL restarts in the middle; writers and relay reconnect."""
    db_url = private_pg.url("machinedb")
    h.record_written(db_url)
    with h.consumer(broker.port, unique_destination) as consumer:
        spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
        writers = h.Writers(db_url).start()
        consumed_at_least(consumer, 1500)
        private_pg.restart()
        writers.join()
        assert_all_delivered(db_url, consumer)


def test_changes_written_while_no_relay_runs_are_published_on_start(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    """(e) A backlog from before the relay started."""
    h.record_written(db_url)
    h.Writers(db_url).start().join()
    assert h.outbox_count(db_url) == 5000
    with h.consumer(broker.port, unique_destination) as consumer:
        spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
        assert_all_delivered(db_url, consumer)


@pytest.mark.slow
def test_standby_takes_over_when_the_leader_dies(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    """(f) Two relays; the leader is killed; the standby takes over, nothing is lost."""
    h.record_written(db_url)
    with h.consumer(broker.port, unique_destination) as consumer:
        relays = [
            spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
            for _ in range(2)
        ]
        h.wait_until(lambda: h.leader_pid(db_url) is not None, deadline=30, what="a leader")
        writers = h.Writers(db_url).start()
        consumed_at_least(consumer, 1500)
        first = h.leader_pid(db_url)
        leader = next(r for r in relays if r.pid == first)
        standby = next(r for r in relays if r.pid != first)
        leader.kill()
        h.wait_until(
            lambda: h.leader_pid(db_url) == standby.pid, deadline=10, what="the standby to lead"
        )
        writers.join()
        assert_all_delivered(db_url, consumer)


def test_unconfirmed_batch_is_sent_again(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    """The connection is cut after the broker stored a batch, before its receipt arrived:
    the relay keeps the rows, reconnects and sends them again."""
    h.record_written(db_url)
    proxy = h.CuttingProxy(broker.port)
    try:
        with h.consumer(broker.port, unique_destination) as consumer:
            spawn_relay(db_url=db_url, stomp_url=proxy.url, destination=unique_destination)
            proxy.armed.set()
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO service (name) SELECT 'cut-' || g FROM generate_series(1, 300) g"
                )
            assert_all_delivered(db_url, consumer)
            assert proxy.cuts == 1
            assert consumer.duplicates() >= 1
    finally:
        proxy.close()


def test_sigterm_exits_zero_quickly_without_loss(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    h.record_written(db_url)
    with h.consumer(broker.port, unique_destination) as consumer:
        relay = spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
        writers = h.Writers(db_url).start()
        consumed_at_least(consumer, 1000)
        code, took = relay.terminate(timeout=10)
        assert code == 0
        assert took < 5.0
        spawn_relay(db_url=db_url, stomp_url=broker.url, destination=unique_destination)
        writers.join()
        assert_all_delivered(db_url, consumer)


def test_message_contract_and_doorbell_latency(
    db: psycopg.Connection[Any],
    db_url: str,
    broker: Any,
    unique_destination: str,
    spawn_relay: SpawnRelay,
) -> None:
    """Headers and body as DESIGN.md says; an isolated change arrives at once (the
    doorbell, not the fallback interval, which is set to a minute here)."""
    h.record_written(db_url)
    with h.consumer(broker.port, unique_destination) as consumer:
        spawn_relay(
            db_url=db_url,
            stomp_url=broker.url,
            destination=unique_destination,
            extra=["--fallback-interval", "60"],
        )
        h.wait_until(lambda: h.leader_pid(db_url) is not None, deadline=30, what="the relay")
        h.wait_until(lambda: _armed(db), deadline=30, what="an idle relay")
        for name in ("first", "second"):
            db.execute("INSERT INTO service (name) VALUES (%s)", [name])
            start = time.monotonic()
            written = h.written_ids(db_url)
            h.wait_until(
                lambda w=written: w <= consumer.ids(),  # type: ignore[misc]
                deadline=3,
                what="the isolated change",
                every=0.01,
            )
            assert time.monotonic() - start < 1.0
            h.wait_until(lambda: _armed(db), deadline=10, what="the relay to go idle again")
        event_id = max(h.written_ids(db_url))
        headers = consumer.headers[event_id]
        assert headers["persistent"] == "true"
        assert headers["content-type"] == "application/json"
        assert headers["table"] == "service"
        assert headers["op"] == "INSERT"
        body = json.loads(consumer.bodies[event_id])
        assert set(body) == {"id", "table", "op", "pk", "before", "after", "txid", "captured_at"}
        assert body["id"] == event_id
        assert body["after"]["name"] == "second"
        assert body["before"] is None
        assert body["pk"] == {"id": body["after"]["id"]}
        assert "T" in body["captured_at"]
        assert body["captured_at"].endswith("+00:00")


def _armed(db: psycopg.Connection[Any]) -> bool:
    row = db.execute("SELECT armed FROM cdc.doorbell").fetchone()
    return bool(row and row[0])


def test_status_and_metrics(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    port = h.free_port()
    h.record_written(db_url)
    with h.consumer(broker.port, unique_destination) as consumer:
        spawn_relay(
            db_url=db_url,
            stomp_url=broker.url,
            destination=unique_destination,
            extra=["--metrics-port", str(port)],
        )
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO service (name) SELECT 'm' || g FROM generate_series(1, 50) g")
        assert_all_delivered(db_url, consumer)

        def published() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            return "cdc_published_total 50.0" in text and "cdc_leader 1.0" in text

        h.wait_until(published, deadline=10, what="the metrics")
    result = h.run_cli(["status"], db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert "backlog: 0 changes" in result.stdout
    assert "leader: cdc-relay" in result.stdout


def test_start_up_failures_exit_non_zero_with_one_line(db_url: str, broker: Any) -> None:
    dead = f"stomp://127.0.0.1:{h.free_port()}"
    cases = [
        (["--stomp-url", "http://nope"], db_url, "scheme must be stomp://"),
        (["--stomp-url", dead], db_url, "cannot connect"),
        (
            ["--stomp-url", broker.url],
            f"postgresql://u:secret@127.0.0.1:{h.free_port()}/x",
            "cannot connect",
        ),
    ]
    for args, url, reason in cases:
        result = h.run_cli(args, db_url=url, timeout=30)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert reason in lines[0]
        assert "secret" not in result.stderr


def _have_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.mark.slow
@pytest.mark.netns
def test_half_open_connections_are_detected_within_a_minute(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    """The link under the relay's connections goes silent (no FIN, no RST): the relay
    notices within 60 s, and publishes what was written meanwhile once the link is back."""
    require(_have_netns(), "root and ip netns")
    h.record_written(db_url)
    port = int(db_url.rsplit(":", 1)[1].split("/", 1)[0])
    database = db_url.rsplit("/", 1)[1]
    netns = h.NetNamespace()
    forwarders: list[h.Forwarder] = []
    try:
        pg_fwd = h.Forwarder(netns.host_ip, port)
        mq_fwd = h.Forwarder(netns.host_ip, broker.port)
        forwarders += [pg_fwd, mq_fwd]
        with h.consumer(broker.port, unique_destination) as consumer:
            relay = spawn_relay(
                db_url=f"postgresql://postgres@{netns.host_ip}:{pg_fwd.port}/{database}",
                stomp_url=f"stomp://{netns.host_ip}:{mq_fwd.port}",
                destination=unique_destination,
                extra=["--fallback-interval", "30"],
                prefix=netns.prefix,
            )
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("INSERT INTO service (name) VALUES ('before')")
                h.wait_until(
                    lambda: h.written_ids(db_url) <= consumer.ids(), deadline=30, what="'before'"
                )
                netns.cut()
                cut_at = time.monotonic()
                h.wait_until(
                    lambda: "PostgreSQL unavailable" in relay.output(),
                    deadline=60,
                    what="the relay to notice the dead link",
                    every=0.5,
                )
                print(f"noticed after {time.monotonic() - cut_at:.1f} s")
                conn.execute("INSERT INTO service (name) VALUES ('during')")
                netns.restore()
                assert_all_delivered(db_url, consumer)
    finally:
        for forwarder in forwarders:
            forwarder.close()
        netns.destroy()


def test_failover_list_skips_a_dead_broker(
    db_url: str, broker: Any, unique_destination: str, spawn_relay: SpawnRelay
) -> None:
    h.record_written(db_url)
    dead = f"stomp://127.0.0.1:{h.free_port()}"
    with h.consumer(broker.port, unique_destination) as consumer:
        spawn_relay(db_url=db_url, stomp_url=f"{dead},{broker.url}", destination=unique_destination)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO service (name) SELECT 'f' || g FROM generate_series(1, 20) g")
        assert_all_delivered(db_url, consumer)
