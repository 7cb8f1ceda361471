"""A generator whose consumer queue nobody declared loses nothing, on ActiveMQ and on
RabbitMQ: why the shipped broker configs declare only the default generator's queue.

The generator subscribes (ActiveMQ creates the queue on SUBSCRIBE; on RabbitMQ the
SUBSCRIBE declares it durable and bound to the topic) and only then, after the receipt,
runs its full pass. So a change published before its first subscription, which no
queue took, is in that pass's read; a change published after it waits in the queue,
also while the generator is stopped. A declared queue that no generator reads, on the
other hand, takes every change and grows until the broker's store limit stops the relay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import services

from machinedb import broker_profile
from tests.conftest import _state_dir, require
from tests.integration import generator_support as gs
from tests.integration import relay_helpers as rh
from tests.integration.conftest import SpawnRelay
from tests.integration.inventory import seed

pytestmark = [pytest.mark.pg, pytest.mark.broker]

CONSUMER = "late"  # declared nowhere


@dataclass(frozen=True)
class Broker:
    kind: str
    url: str
    node: services.RabbitMQNode | None = None


@pytest.fixture(params=[broker_profile.ACTIVEMQ, broker_profile.RABBITMQ])
def any_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == broker_profile.ACTIVEMQ:
        activemq: services.ActiveMQBroker = request.getfixturevalue("broker")
        yield Broker(broker_profile.ACTIVEMQ, activemq.url)
        return
    require(services.have_rabbitmq(), "RabbitMQ (apt-get install rabbitmq-server)")
    node = services.RabbitMQNode(_state_dir("rabbitmq"))
    node.start()
    try:
        yield Broker(broker_profile.RABBITMQ, node.url, node)
    finally:
        node.destroy()


def browse_snippet() -> str:
    """The queue browser of docs/deployment.md ("Consumer queues"), as an operator runs it."""
    text = (gs.ROOT / "docs" / "deployment.md").read_text()
    head = "docker compose exec -T generator python - kea <<'EOF'\n"
    return text.split(head, 1)[1].split("\nEOF\n", 1)[0] + "\n"


def activemq_depth(url: str, topic: str, consumer: str, tmp_path: Path) -> int:
    """How many messages ActiveMQ holds in ``consumer``'s queue, counted by the docs'
    queue browser (the messages stay in the queue)."""
    url_file = tmp_path / "browse.url"
    url_file.write_text(url + "\n")
    done = subprocess.run(
        [sys.executable, "-", consumer],
        input=browse_snippet(),
        env={**os.environ, "STOMP_URL_FILE": str(url_file), "CDC_DESTINATION": topic},
        capture_output=True,
        text=True,
        timeout=gs.DEADLINE * 3,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    queue, count = done.stdout.split()
    assert queue == broker_profile.QUEUE_PREFIX + broker_profile.queue_name(topic, consumer)
    return int(count)


def rabbitmq_queues(node: services.RabbitMQNode) -> dict[str, tuple[int, int]]:
    """Every queue of the node, its messages and its consumers, as the docs show them
    (``rabbitmqctl list_queues name messages consumers``)."""
    out = node.ctl("list_queues", "-q", "--no-table-headers", "name", "messages", "consumers")
    rows = (line.split() for line in out.splitlines() if line.strip())
    return {name: (int(messages), int(consumers)) for name, messages, consumers in rows}


def add_host(db_url: str, host_id: int, ip: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        conn.execute("INSERT INTO host (id, hostname) VALUES (%s, %s)", [host_id, f"late{host_id}"])
        conn.execute(
            "INSERT INTO interface (host_id, mac, ip) VALUES (%s, %s, %s)",
            [host_id, f"52:54:00:00:07:{host_id:02x}", ip],
        )


def test_a_generator_with_an_undeclared_queue_loses_nothing(
    any_broker: Broker,
    db_url: str,
    db: psycopg.Connection[Any],
    spawn_relay: SpawnRelay,
    tmp_path: Path,
) -> None:
    seed(db)
    topic = f"/topic/VirtualTopic.test{uuid.uuid4().hex[:10]}"
    name = broker_profile.queue_name(topic, CONSUMER)
    relay = spawn_relay(db_url=db_url, stomp_url=any_broker.url, destination=topic)

    # Published while no queue exists: the broker keeps it nowhere.
    add_host(db_url, 40, "10.20.0.70")
    gs.wait_for(lambda: rh.outbox_count(db_url) == 0, what=f"relayed\n{relay.output()[-3000:]}")
    if any_broker.node is not None:
        assert name not in rabbitmq_queues(any_broker.node)

    out = tmp_path / "dhcpd.conf"
    metrics_port = services.free_port()
    args = [
        "--database-url", db_url, "--stomp-url", any_broker.url, "--destination", topic,
        "--consumer", CONSUMER, "--output", str(out), "--window", "0.3",
        "--removal-floor", "0", "--no-syntax-check", "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    daemon = gs.Daemon(args, tmp_path / "generator.log").start()
    try:
        # its full pass, after the subscription, renders what was published before it
        gs.wait_for(
            lambda: out.exists() and "fixed-address 10.20.0.70;" in out.read_text(),
            what=f"the first render\n{daemon.output()}",
        )
        assert daemon.terminate() == 0

        # Published while the generator is stopped: its queue, made by its first
        # subscription, keeps it (two messages: the host and its interface).
        add_host(db_url, 41, "10.20.0.71")
        gs.wait_for(lambda: rh.outbox_count(db_url) == 0, what="relayed while stopped")
        if any_broker.node is not None:
            gs.wait_for(lambda: rabbitmq_queues(any_broker.node).get(name) == (2, 0), what="queued")
        else:
            assert activemq_depth(any_broker.url, topic, CONSUMER, tmp_path) == 2

        daemon = gs.Daemon(args, tmp_path / "generator2.log").start()
        relevant = 'dhcp_generator_messages_total{kind="relevant"}'
        gs.wait_for(
            lambda: (gs.metric(metrics_port, relevant) or 0) >= 2,
            what=f"the queued messages delivered\n{daemon.output()}",
        )
        gs.wait_for(lambda: "fixed-address 10.20.0.71;" in out.read_text(), what="rendered")
        if any_broker.node is not None:
            gs.wait_for(lambda: rabbitmq_queues(any_broker.node).get(name) == (0, 1), what="acked")
        else:
            gs.wait_for(
                lambda: activemq_depth(any_broker.url, topic, CONSUMER, tmp_path) == 0,
                what="acked",
            )
    finally:
        code = daemon.terminate() if daemon.alive() else None
        assert code in (0, None), daemon.output()
