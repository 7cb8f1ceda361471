"""RabbitMQ (3.10+, STOMP plugin) as the broker: the relay and the generator as the
operator runs them, against RabbitMQ nodes these tests start on free ports.

What differs from ActiveMQ is pinned here: a receipt is a publisher confirm and an
unroutable message is confirmed too (so consumer queues come first), NACK requeues,
heart-beats are whole seconds, the virtual host comes from CONNECT's host header. A
RabbitMQ cluster of three nodes with quorum queues loses nothing when a node dies.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import services
import stomp

from cdc import broker as cdc_broker
from machinedb import broker_profile, stomp_url
from tests.conftest import _state_dir, require
from tests.integration import generator_support as gs
from tests.integration import relay_helpers as rh
from tests.integration.conftest import SpawnRelay
from tests.integration.inventory import seed

pytestmark = [pytest.mark.pg, pytest.mark.broker]

DEADLINE = 60.0  # seconds


def _require_rabbitmq() -> None:
    require(services.have_rabbitmq(), "RabbitMQ (apt-get install rabbitmq-server)")


@pytest.fixture(scope="module")
def rabbit() -> Iterator[services.RabbitMQNode]:
    """One RabbitMQ node for this module; tests use destinations of their own."""
    _require_rabbitmq()
    node = services.RabbitMQNode(_state_dir("rabbitmq"))
    node.start()
    yield node
    node.destroy()


def _topic() -> str:
    return f"/topic/VirtualTopic.test{uuid.uuid4().hex[:10]}"


class Client(stomp.ConnectionListener):  # type: ignore[misc]
    """A plain STOMP client of the node (vhost "/"): receipts, errors, messages."""

    def __init__(self, url: str, *, heartbeats: tuple[int, int] = (0, 0)) -> None:
        config = stomp_url.parse(url)
        self.cond = threading.Condition()
        self.receipts: set[str] = set()
        self.errors: list[str] = []
        self.messages: list[dict[str, str]] = []
        self.connected: dict[str, str] | None = None
        self.conn = stomp.Connection12(
            [(e.host, e.port) for e in config.endpoints], heartbeats=heartbeats, vhost="/"
        )
        self.conn.set_listener("client", self)
        self.conn.connect(config.username, config.password, wait=True)
        self._wait(lambda: self.connected is not None, "CONNECTED")

    def on_connected(self, frame: Any) -> None:
        with self.cond:
            self.connected = dict(frame.headers)
            self.cond.notify_all()

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_error(self, frame: Any) -> None:
        with self.cond:
            self.errors.append(frame.headers.get("message", ""))
            self.cond.notify_all()

    def on_message(self, frame: Any) -> None:
        with self.cond:
            self.messages.append(dict(frame.headers))
            self.cond.notify_all()

    def _wait(self, condition: Any, what: str, deadline: float = DEADLINE) -> None:
        with self.cond:
            if not self.cond.wait_for(condition, timeout=deadline):
                raise AssertionError(f"timed out waiting for {what}")

    def request(self, receipt: str) -> None:
        self._wait(lambda: receipt in self.receipts or self.errors, f"receipt {receipt}")

    def send(self, destination: str, event_id: int) -> None:
        receipt = f"send-{event_id}-{uuid.uuid4().hex[:6]}"
        self.conn.send(
            destination,
            "{}",
            headers={"persistent": "true", "event-id": str(event_id), "receipt": receipt},
        )
        self.request(receipt)

    def declare(self, queue: str, *, quorum: bool = False) -> None:
        """Declare ``queue``'s durable RabbitMQ queue, bound to its topic, and leave it."""
        topic, name = broker_profile.split_queue(queue)
        receipt = f"declare-{uuid.uuid4().hex[:6]}"
        headers = {**broker_profile.declare_headers(name, quorum=quorum), "receipt": receipt}
        self.conn.subscribe(topic, id=receipt, ack="client-individual", headers=headers)
        self.request(receipt)
        assert not self.errors, self.errors
        self.conn.unsubscribe(id=receipt)

    def read(self, queue: str, *, prefetch: int = 500) -> None:
        """Read ``queue`` from /amq/queue/NAME, acknowledging each message."""
        self.conn.subscribe(
            broker_profile.Profile("rabbitmq").reader(queue),
            id="reader",
            ack="auto",
            headers={"prefetch-count": str(prefetch)},
        )

    def event_ids(self) -> Counter[int]:
        with self.cond:
            return Counter(int(h["event-id"]) for h in self.messages if "event-id" in h)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.disconnect()


@contextlib.contextmanager
def client(url: str, **kwargs: Any) -> Iterator[Client]:
    instance = Client(url, **kwargs)
    try:
        yield instance
    finally:
        instance.close()


def drain_ids(
    url: str, queue: str, *, expected: set[int], deadline: float = DEADLINE
) -> Counter[int]:
    """Every event-id an independent reader finds in ``queue`` (it stops once it has
    ``expected`` and nothing more came for a moment)."""
    with client(url) as reader:
        reader.read(queue)
        end = time.monotonic() + deadline
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < end:
            ids = reader.event_ids()
            if sum(ids.values()) != last:
                last, quiet_since = sum(ids.values()), time.monotonic()
            elif set(ids) >= expected and time.monotonic() - quiet_since > 1.0:
                break
            time.sleep(0.1)
        return reader.event_ids()


# ---- what RabbitMQ does differently ------------------------------------------------


def test_an_unroutable_message_is_confirmed_and_dropped(rabbit: services.RabbitMQNode) -> None:
    """Why consumer queues must exist before anything is published."""
    topic = _topic()
    queue = f"/queue/Consumer.late.{topic.removeprefix('/topic/')}"
    with client(rabbit.url) as publisher:
        publisher.send(topic, 1)  # no queue is bound yet: confirmed all the same
        assert not publisher.errors
        publisher.declare(queue)
        publisher.send(topic, 2)
    ids = drain_ids(rabbit.url, queue, expected={2})
    assert set(ids) == {2}, "the message published before the queue existed is gone"


def test_nack_requeues(rabbit: services.RabbitMQNode) -> None:
    """A plain NACK gives the message back (ActiveMQ would dead-letter it): the
    generator therefore never NACKs; the profile says so."""
    topic = _topic()
    queue = f"/queue/Consumer.nack.{topic.removeprefix('/topic/')}"
    assert broker_profile.Profile("rabbitmq").nack_requeues
    with client(rabbit.url) as c:
        c.declare(queue)
        c.send(topic, 7)
        c.conn.subscribe(
            broker_profile.Profile("rabbitmq").reader(queue),
            id="r",
            ack="client-individual",
            headers={"prefetch-count": "1"},
        )
        c._wait(lambda: len(c.messages) == 1, "the first delivery")
        c.conn.nack(c.messages[0]["ack"])
        c._wait(lambda: len(c.messages) == 2, "the redelivery after NACK")
        assert c.messages[1]["event-id"] == "7"
        assert c.messages[1]["redelivered"] == "true"
        c.conn.ack(c.messages[1]["ack"])


def test_heartbeats_are_whole_seconds(
    rabbit: services.RabbitMQNode, caplog: pytest.LogCaptureFixture
) -> None:
    with client(rabbit.url, heartbeats=(1500, 1500)) as c:
        assert c.connected is not None
        assert c.connected["heart-beat"] == "1000,1000", "RabbitMQ rounds 1.5 s down"
        assert c.connected["server"].startswith("RabbitMQ/")
    configured = stomp_url.parse(rabbit.url, kind="rabbitmq")
    publisher = cdc_broker.Publisher(configured, destination=_topic(), heartbeat=1.5)
    publisher.connect()
    try:  # asked for whole seconds: what RabbitMQ grants is what was asked
        assert publisher._listener.heartbeat == "2000,2000"
    finally:
        publisher.close()
    detected = cdc_broker.Publisher(
        stomp_url.parse(rabbit.url), destination=_topic(), heartbeat=1.5
    )
    with caplog.at_level(logging.WARNING, logger="cdc.broker"):
        detected.connect()
    try:
        assert detected.profile.kind == "rabbitmq"
        assert "rounds heart-beats to whole seconds" in caplog.text
    finally:
        detected.close()


def test_the_vhost_goes_into_connects_host_header(rabbit: services.RabbitMQNode) -> None:
    """stomp.py's default host header (the server's name) is no vhost RabbitMQ knows."""
    config = stomp_url.parse(rabbit.url)
    assert config.vhost == "/"
    plain = stomp.Connection12([(config.endpoints[0].host, config.endpoints[0].port)])
    with pytest.raises(stomp.exception.ConnectFailedException):
        plain.connect(config.username, config.password, wait=True, timeout=10)
    with contextlib.suppress(Exception):
        plain.disconnect()
    publisher = cdc_broker.Publisher(config, destination=_topic(), heartbeat=10.0)
    publisher.connect()
    publisher.close()


# ---- the relay: a burst with a broker restart in the middle -------------------------


def test_burst_with_a_broker_restart_loses_nothing(
    rabbit: services.RabbitMQNode, db_url: str, spawn_relay: SpawnRelay
) -> None:
    topic = _topic()
    queue = f"/queue/Consumer.audit.{topic.removeprefix('/topic/')}"
    with client(rabbit.url) as c:
        c.declare(queue)  # the queue first, as the deployment's definitions do
    rh.record_written(db_url)
    relay = spawn_relay(db_url=db_url, stomp_url=rabbit.url, destination=topic)
    _wait_relaying(relay)
    writers = rh.Writers(db_url, threads=4, per_thread=1250).start()
    rh.wait_until(lambda: writers.total() >= 1500, deadline=DEADLINE, what="the first changes")
    rabbit.restart()  # SIGTERM, then a fresh start on the same ports and data
    writers.join(timeout=120)
    written = rh.written_ids(db_url)
    assert len(written) == 5000
    rh.wait_until(
        lambda: rh.outbox_count(db_url) == 0,
        deadline=90,
        what=f"an empty outbox\n{relay.output()[-3000:]}",
    )
    ids = drain_ids(rabbit.url, queue, expected=written)
    missing = written - set(ids)
    assert not missing, f"{len(missing)} changes lost, e.g. {sorted(missing)[:5]}"
    assert set(ids) == written
    assert "broker unavailable" in relay.output(), "the restart came after the relay was done"
    print(f"5000 changes, {sum(ids.values()) - len(ids)} duplicates after the restart")


def _wait_relaying(relay: rh.RelayProcess) -> None:
    """Past the relay's start-up checks (a broker down then would stop it, by design)."""
    rh.wait_until(
        lambda: "relaying changes" in relay.output(),
        deadline=DEADLINE,
        what=f"the relay to start\n{relay.output()}",
    )


# ---- the whole pipeline: psql → relay → RabbitMQ → generator → dhcpd.conf ------------


def _psql(db_url: str, sql: str) -> None:
    psql = services.pg_bin() / "psql"
    done = subprocess.run(
        [str(psql), db_url, "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_psql_insert_reaches_dhcpd_conf_through_rabbitmq(
    rabbit: services.RabbitMQNode,
    db_url: str,
    db: psycopg.Connection[Any],
    spawn_relay: SpawnRelay,
    tmp_path: Path,
) -> None:
    seed(db)
    topic = _topic()
    out = tmp_path / "dhcpd.conf"
    args = [
        "--database-url", db_url, "--stomp-url", rabbit.url, "--destination", topic,
        "--consumer", "gen", "--output", str(out), "--window", "0.3", "--removal-floor", "0",
        "--no-syntax-check",
    ]  # fmt: skip
    daemon = gs.Daemon(args, tmp_path / "generator.log").start()
    try:
        # no queue yet: the generator declares it (durable, bound to the topic) itself
        gs.wait_for(out.exists, what=f"the first render\n{daemon.output()}")
        assert f"subscribed to {topic}" in daemon.output()
        relay = spawn_relay(db_url=db_url, stomp_url=rabbit.url, destination=topic)
        _psql(
            db_url,
            "INSERT INTO host (id, hostname) VALUES (10, 'rabbit1');"
            " INSERT INTO interface (host_id, mac, ip) VALUES (10, '52:54:00:00:00:10', '10.20.0.60')",
        )
        gs.wait_for(
            lambda: "fixed-address 10.20.0.60;" in out.read_text(),
            what=f"the insert in dhcpd.conf\n{daemon.output()[-3000:]}\n{relay.output()[-3000:]}",
        )
        # a restarted generator finds its queue and reads it as /amq/queue/<name>
        assert daemon.terminate() == 0
        daemon = gs.Daemon(args, tmp_path / "generator2.log").start()
        gs.wait_for(
            lambda: "subscribed to /amq/queue/Consumer.gen." in daemon.output(), what="resubscribe"
        )
        _psql(db_url, "UPDATE interface SET ip = '10.20.0.61' WHERE host_id = 10")
        gs.wait_for(lambda: "fixed-address 10.20.0.61;" in out.read_text(), what="the update")
    finally:
        code = daemon.terminate() if daemon.alive() else None
        assert code in (0, None), daemon.output()


# ---- a cluster of three nodes with quorum queues ------------------------------------


@pytest.fixture
def cluster() -> Iterator[services.RabbitMQCluster]:
    _require_rabbitmq()
    instance = services.RabbitMQCluster(_state_dir("rabbitmq-cluster"), size=3)
    instance.start()
    yield instance
    instance.destroy()


@pytest.mark.slow
def test_cluster_node_killed_mid_burst_loses_nothing(
    cluster: services.RabbitMQCluster,
    db_url: str,
    db: psycopg.Connection[Any],
    spawn_relay: SpawnRelay,
    tmp_path: Path,
) -> None:
    assert len(cluster.members()) == 3
    seed(db)
    topic = _topic()
    gen_queue = f"/queue/Consumer.gen.{topic.removeprefix('/topic/')}"
    audit_queue = f"/queue/Consumer.audit.{topic.removeprefix('/topic/')}"
    with client(cluster.nodes[1].url) as c:  # quorum queues, declared before publishing
        c.declare(gen_queue, quorum=True)
        c.declare(audit_queue, quorum=True)
    out = tmp_path / "dhcpd.conf"
    args = [
        "--database-url", db_url, "--stomp-url", cluster.url, "--destination", topic,
        "--consumer", "gen", "--output", str(out), "--window", "0.3", "--removal-floor", "0",
        "--no-syntax-check",
    ]  # fmt: skip
    daemon = gs.Daemon(args, tmp_path / "generator.log").start()
    try:
        gs.wait_for(out.exists, what=f"the first render\n{daemon.output()}")
        rh.record_written(db_url)
        relay = spawn_relay(db_url=db_url, stomp_url=cluster.url, destination=topic)
        _wait_relaying(relay)
        writers = rh.Writers(db_url, threads=4, per_thread=750).start()
        rh.wait_until(lambda: writers.total() >= 1000, deadline=DEADLINE, what="the first changes")
        cluster.nodes[0].stop_node_only(kill=True)  # the node both commands are connected to
        writers.join(timeout=120)
        written = rh.written_ids(db_url)
        assert len(written) == 3000
        rh.wait_until(
            lambda: rh.outbox_count(db_url) == 0,
            deadline=90,
            what=f"an empty outbox\n{relay.output()[-3000:]}",
        )
        ids = drain_ids(cluster.nodes[2].url, audit_queue, expected=written)
        missing = written - set(ids)
        assert not missing, f"{len(missing)} changes lost, e.g. {sorted(missing)[:5]}"
        # both commands lost the killed node and carry on, on the surviving nodes
        assert "broker unavailable" in relay.output()
        assert "lost the broker connection" in daemon.output()
        _psql(
            db_url,
            "INSERT INTO host (id, hostname) VALUES (10, 'quorum1');"
            " INSERT INTO interface (host_id, mac, ip) VALUES (10, '52:54:00:00:00:10', '10.20.0.60')",
        )
        gs.wait_for(
            lambda: "fixed-address 10.20.0.60;" in out.read_text(),
            deadline=DEADLINE,
            what=f"the insert after the kill\n{daemon.output()[-3000:]}",
        )
        rh.wait_until(lambda: rh.outbox_count(db_url) == 0, deadline=DEADLINE, what="relayed")
        assert daemon.alive() and relay.proc.poll() is None
    finally:
        code = daemon.terminate() if daemon.alive() else None
        assert code in (0, None), daemon.output()
