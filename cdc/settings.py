"""The relay's configuration, read once by the CLI into a frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from machinedb.stomp_url import BrokerConfig

DEFAULT_DESTINATION = "/topic/VirtualTopic.machinedb.changes"
BATCH_SIZE = 1000  # changes per STOMP transaction
FALLBACK_INTERVAL = 30.0  # seconds; drain even without a doorbell (safety net)
HEARTBEAT = 10.0  # seconds; STOMP heart-beats both ways
RECEIPT_TIMEOUT = 30.0  # seconds; an unconfirmed batch after this means reconnect
STANDBY_POLL = 1.0  # seconds; how often a standby relay tries for leadership


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str  # psycopg form (postgresql://)
    broker: BrokerConfig
    destination: str = DEFAULT_DESTINATION
    batch_size: int = BATCH_SIZE
    fallback_interval: float = FALLBACK_INTERVAL
    heartbeat: float = HEARTBEAT
    receipt_timeout: float = RECEIPT_TIMEOUT
    standby_poll: float = STANDBY_POLL
    metrics_port: int | None = None
    ssl_ca_file: str | None = None
