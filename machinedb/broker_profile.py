"""One logical topic and a consumer name, mapped onto each broker's STOMP destinations.

The contract (docs: DESIGN "Broker mapping") names a topic, ``/topic/VirtualTopic.X``,
and one durable queue per consumer, ``Consumer.<name>.VirtualTopic.X``, that receives
every message published to the topic:

- ActiveMQ builds that queue itself from the VirtualTopic naming, at its first
  subscription (or declared in ``activemq.xml``): a consumer reads
  ``/queue/Consumer.<name>.VirtualTopic.X``.
- RabbitMQ's STOMP plugin publishes ``/topic/X`` to ``amq.topic`` with routing key X.
  The consumer's queue is a durable, non-auto-delete queue bound to it, declared by a
  SUBSCRIBE to the topic with ``x-queue-name`` (or up front, e.g. as a quorum queue),
  and readable by anyone as ``/amq/queue/<name>``.

The two brokers differ beyond names, and the profile says how:

- A receipt on COMMIT: ActiveMQ sends it once the transaction is stored; RabbitMQ sends
  it at once, and confirms each SEND (with a receipt) only once its queues have it. So
  on RabbitMQ every SEND carries its own receipt and there is no transaction.
- RabbitMQ confirms a message that no queue takes, and drops it. Nothing is lost by
  that: a generator subscribes (creating its queue) before its first full read of the
  database, so what was published before its queue existed is in that read. Declare a
  queue up front only to choose its type (quorum): a declared queue that no generator
  reads fills up (docs/deployment.md, "Consumer queues").
- NACK: ActiveMQ sends the message to its DLQ, RabbitMQ requeues it (unless
  ``requeue:false``). The generator never NACKs: it acknowledges what it has applied
  and leaves the rest for redelivery.
- Heart-beats: RabbitMQ rounds them down to whole seconds; we ask for whole seconds.
- Prefetch: ``activemq.prefetchSize`` vs. ``prefetch-count`` (an AMQP short).

The kind is detected from the ``server`` header of CONNECTED (``ActiveMQ/5.17.2``,
``RabbitMQ/3.10.8``); a configured kind (``--broker``, env STOMP_BROKER) wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

ACTIVEMQ = "activemq"
RABBITMQ = "rabbitmq"
KINDS = (ACTIVEMQ, RABBITMQ)
DEFAULT_KIND = ACTIVEMQ  # a server that does not say what it is gets the VirtualTopic names

TOPIC_PREFIX = "/topic/"
VIRTUAL_TOPIC_PREFIX = "/topic/VirtualTopic."
QUEUE_PREFIX = "/queue/"
RABBITMQ_QUEUE_PREFIX = "/amq/queue/"
RABBITMQ_PREFETCH_MAX = 65535  # messages; AMQP's basic.qos prefetch-count is a short


@dataclass(frozen=True, kw_only=True)
class Subscription:
    """One way to SUBSCRIBE to a consumer queue: the destination and extra headers."""

    destination: str
    headers: Mapping[str, str] = field(default_factory=dict)


def kind_from_server(server: str | None) -> str | None:
    """The broker kind a CONNECTED ``server`` header names, or None when it names none."""
    product = (server or "").split("/", 1)[0].strip().lower()
    if "rabbitmq" in product:
        return RABBITMQ
    if "activemq" in product:
        return ACTIVEMQ
    return None


def check_kind(kind: str) -> str:
    """``kind`` lower-cased; ValueError with a one-line reason when it is none of KINDS."""
    value = kind.strip().lower()
    if value not in KINDS:
        raise ValueError(f"STOMP_BROKER {kind!r} must be one of {', '.join(KINDS)}")
    return value


def queue_name(destination: str, consumer: str) -> str:
    """The consumer queue's plain name: ``/topic/VirtualTopic.X`` and ``dhcp`` give
    ``Consumer.dhcp.VirtualTopic.X``."""
    if not destination.startswith(VIRTUAL_TOPIC_PREFIX) or destination == VIRTUAL_TOPIC_PREFIX:
        raise ValueError(
            f"CDC_DESTINATION {destination!r} must look like {VIRTUAL_TOPIC_PREFIX}<name>"
            " (a virtual topic, so each consumer gets its own durable queue)"
        )
    if not consumer or any(c in consumer for c in "./*>#, \t"):
        raise ValueError(f"consumer name {consumer!r} must be a plain name (e.g. dhcp)")
    return f"Consumer.{consumer}.{destination.removeprefix(TOPIC_PREFIX)}"


def split_queue(queue: str) -> tuple[str, str]:
    """The (topic destination, queue name) behind a consumer queue given as
    ``/queue/Consumer.<name>.VirtualTopic.X`` (how ActiveMQ names it) or as its plain
    name; ValueError when it does not follow the VirtualTopic naming."""
    name = queue.removeprefix(QUEUE_PREFIX).removeprefix(RABBITMQ_QUEUE_PREFIX)
    head, sep, rest = name.partition(".")
    consumer, sep2, topic = rest.partition(".")
    if head != "Consumer" or not sep or not sep2 or not consumer:
        raise ValueError(f"consumer queue {queue!r} must look like Consumer.<name>.VirtualTopic.X")
    destination = TOPIC_PREFIX + topic
    queue_name(destination, consumer)  # validates both parts
    return destination, name


@dataclass(frozen=True)
class Profile:
    """What one broker kind needs from a publisher and a subscriber."""

    kind: str

    @property
    def rabbitmq(self) -> bool:
        return self.kind == RABBITMQ

    @property
    def confirm_per_send(self) -> bool:
        """Each SEND needs its own receipt, outside any transaction (RabbitMQ answers a
        COMMIT's receipt before the messages are confirmed)."""
        return self.rabbitmq

    @property
    def nack_requeues(self) -> bool:
        """A plain NACK gives the message back to the queue (RabbitMQ) instead of
        dead-lettering it (ActiveMQ)."""
        return self.rabbitmq

    def heartbeat_ms(self, seconds: float) -> int:
        """The CONNECT heart-beat for ``seconds``: RabbitMQ keeps whole seconds only
        (rounding 1.5 s down to 1 s, and expecting ours that often), so ask it for the
        next whole second; ActiveMQ takes milliseconds as they are."""
        if seconds <= 0:
            return 0
        if self.rabbitmq:
            return max(1, math.ceil(seconds - 1e-9)) * 1000
        return int(seconds * 1000)

    def reader(self, queue: str) -> str:
        """The destination any client reads a consumer queue from (the queue must exist)."""
        _, name = split_queue(queue)
        return (RABBITMQ_QUEUE_PREFIX if self.rabbitmq else QUEUE_PREFIX) + name

    def subscriptions(self, queue: str, *, prefetch: int) -> tuple[Subscription, ...]:
        """The SUBSCRIBEs to try, in order, for a durable consumer of ``queue``
        (``/queue/Consumer.<name>.VirtualTopic.X``).

        RabbitMQ: the queue as it is when it exists (declared up front, maybe as a
        quorum queue, which a declaring SUBSCRIBE without ``x-queue-type`` would be
        refused), else a SUBSCRIBE to the topic that declares it durable and binds it.
        """
        if not self.rabbitmq:
            return (
                Subscription(destination=queue, headers={"activemq.prefetchSize": str(prefetch)}),
            )
        topic, name = split_queue(queue)
        window = {"prefetch-count": str(min(prefetch, RABBITMQ_PREFETCH_MAX))}
        return (
            Subscription(destination=RABBITMQ_QUEUE_PREFIX + name, headers=window),
            Subscription(destination=topic, headers={**declare_headers(name), **window}),
        )


def declare_headers(name: str, *, quorum: bool = False) -> dict[str, str]:
    """RabbitMQ SUBSCRIBE headers that declare (or match) the durable queue ``name``
    bound to the subscribed topic; ``quorum``: a replicated quorum queue."""
    headers = {"durable": "true", "auto-delete": "false", "x-queue-name": name}
    if quorum:
        headers["x-queue-type"] = "quorum"
    return headers


def resolve(configured: str | None, server: str | None) -> Profile:
    """The profile for a connection: the configured kind, else the one CONNECTED's
    ``server`` header names, else DEFAULT_KIND."""
    if configured:
        return Profile(check_kind(configured))
    return Profile(kind_from_server(server) or DEFAULT_KIND)
