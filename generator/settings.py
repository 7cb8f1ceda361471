"""What the generator runs with: read once by the CLI, passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from generator import omapi, render, render_options

DEFAULT_DESTINATION = "/topic/VirtualTopic.machinedb.changes"
DEFAULT_CONSUMER = "dhcp"
DEFAULT_OUTPUT = {"isc": "/etc/dhcp/dhcpd.conf", "kea": "/etc/kea/kea-dhcp4.conf"}
# ActiveMQ stops dispatching once this many messages are unacknowledged, and a
# message is acknowledged only after the render that covers it: so one render covers
# at most this many messages. 1000 keeps a 10,000-change burst to about ten renders
# while holding at most ~1000 small frames in memory.
PREFETCH = 1000  # messages
COALESCE_WINDOW = 1.0  # seconds between the end of a render and the next one
# A full read that checks the incremental state: drift is corrected (and reported)
# within this long. A full pass costs ~1.3 s of one core at 100,000 interfaces and
# ~12 s at 1,000,000: at 10 minutes that is 0.2% and 2% of a core, and a change that
# somehow went missing is served within 10 minutes, sooner than the old 5-minute cron
# on average.
RECONCILE_INTERVAL = 600.0  # seconds
# How long after a reconciling read a message may still explain a difference (a
# change committed before the read whose message was on its way).
RECONCILE_GRACE = 10.0  # seconds
MAX_REMOVAL_SHARE = 0.5  # of the reservations in the current file
# Removing up to this many reservations is never refused: a lab of a few hosts can
# delete them all, while an empty read at a site of hundreds is still refused.
REMOVAL_FLOOR = 25  # reservations
RELOAD_TIMEOUT = 60.0  # seconds

_TOPIC_PREFIX = "/topic/VirtualTopic."


def consumer_queue(destination: str, consumer: str) -> str:
    """The durable queue ActiveMQ fills for ``consumer`` from the virtual topic.

    ``/topic/VirtualTopic.X`` becomes ``/queue/Consumer.<consumer>.VirtualTopic.X``.
    """
    if not destination.startswith(_TOPIC_PREFIX) or len(destination) == len(_TOPIC_PREFIX):
        raise ValueError(
            f"CDC_DESTINATION {destination!r} must look like {_TOPIC_PREFIX}<name>"
            " (a virtual topic, so each generator gets its own durable queue)"
        )
    if not consumer or any(c in consumer for c in "./*>, \t"):
        raise ValueError(f"DHCP_CONSUMER {consumer!r} must be a plain name (e.g. dhcp)")
    return f"/queue/Consumer.{consumer}.{destination[len('/topic/') :]}"


@dataclass(frozen=True, kw_only=True)
class OmapiTarget:
    """Where dhcpd's OMAPI listens, and the key both sides use (its repr hides the secret)."""

    host: str
    port: int
    key: omapi.Key
    key_file: str


@dataclass(frozen=True, kw_only=True)
class ApplySettings:
    """Where and how a rendered config is written and loaded."""

    fmt: render.Format
    output: Path
    reload_command: tuple[str, ...] = ()  # argv; empty means no reload command
    kea_control_socket: str | None = None  # also send Kea config-reload here
    force: bool = False
    max_removal_share: float = MAX_REMOVAL_SHARE
    removal_floor: int = REMOVAL_FLOOR
    syntax_check: bool = True
    reload_timeout: float = RELOAD_TIMEOUT
    omapi: OmapiTarget | None = None  # ISC: host changes over OMAPI, without a restart
    # Kea: the generator's URL of Kea's hosts database (reservations go there, not into
    # the file); it holds a password, so it stays out of the repr.
    kea_hosts_database: str | None = field(default=None, repr=False)
    options: render_options.RenderOptions = field(default_factory=render_options.RenderOptions)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the daemon needs; secrets stay inside the URLs."""

    database_url: str
    stomp_url: str | None
    queue: str
    apply: ApplySettings
    prefetch: int = PREFETCH
    window: float = COALESCE_WINDOW
    server: str | None = None  # the dhcp_server whose scope is rendered; None: every subnet
    reconcile_interval: float = RECONCILE_INTERVAL  # 0 turns it off
    reconcile_grace: float = RECONCILE_GRACE
    metrics_port: int | None = None
    ssl_ca_file: str | None = None  # CA certificates for stomp+ssl:// (None: the system's)
    broker_kind: str | None = None  # "activemq" or "rabbitmq"; None: detected on connect
