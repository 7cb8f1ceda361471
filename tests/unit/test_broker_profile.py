"""The broker profile: one topic and consumer name, each broker's destinations."""

from __future__ import annotations

import pytest

from cdc import broker, message
from machinedb import broker_profile, stomp_url

TOPIC = "/topic/VirtualTopic.machinedb.changes"
QUEUE = "/queue/Consumer.dhcp.VirtualTopic.machinedb.changes"
NAME = "Consumer.dhcp.VirtualTopic.machinedb.changes"


@pytest.mark.parametrize(
    ("server", "kind"),
    [
        ("RabbitMQ/3.10.8", "rabbitmq"),
        ("ActiveMQ/5.17.2", "activemq"),
        ("apache-activemq-artemis/2.31", "activemq"),
        (None, None),
        ("SomethingElse/1.0", None),
    ],
)
def test_the_server_header_names_the_kind(server: str | None, kind: str | None) -> None:
    assert broker_profile.kind_from_server(server) == kind


def test_a_configured_kind_wins_over_the_server_header() -> None:
    assert broker_profile.resolve("activemq", "RabbitMQ/3.10.8").kind == "activemq"
    assert broker_profile.resolve("RabbitMQ", "ActiveMQ/5.17.2").kind == "rabbitmq"
    assert broker_profile.resolve(None, "RabbitMQ/3.10.8").kind == "rabbitmq"
    assert broker_profile.resolve(None, None).kind == "activemq"


def test_an_unknown_kind_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="activemq, rabbitmq"):
        broker_profile.check_kind("kafka")
    with pytest.raises(ValueError, match="STOMP_BROKER"):
        stomp_url.parse("stomp://h:61613", kind="kafka")
    assert stomp_url.parse("stomp://h:61613", kind="rabbitmq").kind == "rabbitmq"
    assert stomp_url.parse("stomp://h:61613").kind is None


def test_activemq_reads_its_virtual_topic_queue() -> None:
    profile = broker_profile.Profile("activemq")
    (only,) = profile.subscriptions(QUEUE, prefetch=1000)
    assert only.destination == QUEUE
    assert dict(only.headers) == {"activemq.prefetchSize": "1000"}
    assert profile.reader(QUEUE) == QUEUE
    assert not profile.confirm_per_send
    assert not profile.nack_requeues


def test_rabbitmq_reads_the_existing_queue_else_declares_it_bound_to_the_topic() -> None:
    profile = broker_profile.Profile("rabbitmq")
    existing, declaring = profile.subscriptions(QUEUE, prefetch=1000)
    assert existing.destination == f"/amq/queue/{NAME}"
    assert dict(existing.headers) == {"prefetch-count": "1000"}
    assert declaring.destination == TOPIC
    assert dict(declaring.headers) == {
        "durable": "true",
        "auto-delete": "false",
        "x-queue-name": NAME,
        "prefetch-count": "1000",
    }
    assert profile.reader(QUEUE) == f"/amq/queue/{NAME}"
    assert profile.confirm_per_send
    assert profile.nack_requeues


def test_rabbitmq_prefetch_is_capped_at_an_amqp_short() -> None:
    subscriptions = broker_profile.Profile("rabbitmq").subscriptions(QUEUE, prefetch=2**31 - 1)
    assert {s.headers["prefetch-count"] for s in subscriptions} == {"65535"}


def test_queue_names_follow_the_virtual_topic_naming() -> None:
    assert broker_profile.queue_name(TOPIC, "dhcp") == NAME
    assert broker_profile.split_queue(QUEUE) == (TOPIC, NAME)
    assert broker_profile.split_queue(f"/amq/queue/{NAME}") == (TOPIC, NAME)
    for bad in ("/queue/dhcp", "/queue/Consumer..VirtualTopic.x", "/queue/Consumer.a.Topic.x"):
        with pytest.raises(ValueError):
            broker_profile.split_queue(bad)
    with pytest.raises(ValueError):
        broker_profile.queue_name("/topic/changes", "dhcp")
    with pytest.raises(ValueError):
        broker_profile.queue_name(TOPIC, "a.b")


def test_quorum_declaration_headers() -> None:
    assert broker_profile.declare_headers(NAME, quorum=True)["x-queue-type"] == "quorum"
    assert "x-queue-type" not in broker_profile.declare_headers(NAME)


@pytest.mark.parametrize(
    ("seconds", "rabbitmq", "activemq"),
    [(10.0, 10_000, 10_000), (1.5, 2000, 1500), (0.2, 1000, 200), (0.0, 0, 0), (3.0, 3000, 3000)],
)
def test_rabbitmq_heartbeats_are_whole_seconds(
    seconds: float, rabbitmq: int, activemq: int
) -> None:
    assert broker_profile.Profile("rabbitmq").heartbeat_ms(seconds) == rabbitmq
    assert broker_profile.Profile("activemq").heartbeat_ms(seconds) == activemq


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("stomp://u:p@h:61613", "/"),
        ("stomp://h:61613/", "/"),
        ("stomp://h:61613/%2F", "/"),
        ("stomp://h:61613/machinedb", "machinedb"),
        ("stomp://u:p@a:1/prod,stomp://b:2/prod", "prod"),
        ("stomp://u:p@a:1/prod,stomp://b:2", "prod"),
    ],
)
def test_the_vhost_comes_from_the_url_path(url: str, vhost: str) -> None:
    assert stomp_url.parse(url).vhost == vhost


def test_entries_naming_different_vhosts_are_refused() -> None:
    with pytest.raises(ValueError, match="different virtual hosts"):
        stomp_url.parse("stomp://a:1/one,stomp://b:2/two")


def test_a_rabbitmq_batch_is_plain_sends_each_with_a_receipt() -> None:
    change = message.Change(id=7, table="host", op="INSERT", body=b"{}")
    with_receipt = message.send_frame(change, destination=TOPIC, transaction=None, receipt="r-1")
    assert b"\nreceipt:r-1\n" in with_receipt
    assert b"transaction:" not in with_receipt
    in_transaction = message.send_frame(change, destination=TOPIC, transaction="tx-1")
    assert b"\ntransaction:tx-1\n" in in_transaction
    assert b"receipt:" not in in_transaction


def test_a_batch_awaits_every_receipt_it_names() -> None:
    single = broker.Batch(receipt="batch-1", ids=(1, 2), sent_at=0.0)
    assert single.awaited == ("batch-1",)
    each = broker.Batch(
        receipt="batch-2-1", ids=(1, 2), sent_at=0.0, receipts=("batch-2-0", "batch-2-1")
    )
    assert each.awaited == ("batch-2-0", "batch-2-1")
