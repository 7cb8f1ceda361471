"""``cdc-relay``: publish every captured change to the broker (``run``, the default), or
print the outbox backlog and lag (``status``).

Configuration comes from the environment and command-line flags (flags win), read here
once into a frozen Settings object.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

from cdc import broker, database, errors, metrics, relay, settings, status
from machinedb import broker_profile, cli_args, daemon, db_url, logs, secrets, stomp_url

logger = logging.getLogger(__name__)

EXIT_UNAVAILABLE = 1
EXIT_CONFIG = cli_args.EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = cli_args.Parser(
        prog="cdc-relay",
        description=(
            "Publish every change captured in the cdc.change outbox to ActiveMQ as a "
            "persistent STOMP message, deleting a row only after the broker confirmed it "
            "(at least once). Two relays may run: a PostgreSQL advisory lock elects one."
        ),
        epilog="SIGTERM/SIGINT finish or abandon (without loss) the batch in flight and exit 0.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "status"],
        default="run",
        help="run the daemon (default), or print backlog, lag, doorbell and leader",
    )
    env = os.environ.get
    parser.add_argument(
        "--database-url",
        help="machine database, postgresql:// or postgresql+psycopg:// "
        "(env DATABASE_URL, or a file named by DATABASE_URL_FILE)",
    )
    parser.add_argument(
        "--stomp-url",
        help="broker(s): stomp://user:pass@host:61613 or stomp+ssl://..., comma-separated "
        "for failover (env STOMP_URL or STOMP_URL_FILE; required for run)",
    )
    parser.add_argument(
        "--broker",
        choices=broker_profile.KINDS,
        type=str.lower,
        default=env("STOMP_BROKER") or None,
        help="the broker's kind (env STOMP_BROKER; default: detected from its CONNECTED frame)",
    )
    parser.add_argument(
        "--destination",
        default=env("CDC_DESTINATION", settings.DEFAULT_DESTINATION),
        help="where changes are published (env CDC_DESTINATION; default %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=cli_args.positive_int,
        default=settings.BATCH_SIZE,
        help="changes per STOMP transaction (default %(default)s)",
    )
    parser.add_argument(
        "--fallback-interval",
        type=cli_args.positive_seconds,
        default=settings.FALLBACK_INTERVAL,
        help="seconds between drains when no doorbell rings (default %(default)s)",
    )
    parser.add_argument(
        "--heartbeat",
        type=cli_args.positive_seconds,
        default=settings.HEARTBEAT,
        help="STOMP heart-beat interval in seconds, both ways (default %(default)s)",
    )
    parser.add_argument(
        "--receipt-timeout",
        type=cli_args.positive_seconds,
        default=settings.RECEIPT_TIMEOUT,
        help="seconds to wait for the broker to confirm a batch before reconnecting "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--ssl-ca-file",
        default=env("SSL_CA_FILE"),
        help="CA certificates for stomp+ssl:// (env SSL_CA_FILE; default: the system's)",
    )
    parser.add_argument(
        "--metrics-port",
        type=cli_args.port,
        help="serve Prometheus metrics on this port, 1-65535 (default: off)",
    )
    cli_args.add_log_arguments(parser)
    return parser


def load_settings(args: argparse.Namespace) -> settings.Settings:
    """Validate the configuration (flags, else the environment); ConfigError with a
    one-line reason that never shows a secret."""
    try:
        raw_database_url = args.database_url or secrets.from_env("DATABASE_URL")
        raw_stomp_url = args.stomp_url or secrets.from_env("STOMP_URL")
        if not raw_database_url:
            raise errors.ConfigError("DATABASE_URL is not set (or pass --database-url)")
        database_url = db_url.psycopg_url(raw_database_url)
        broker_config = (
            stomp_url.parse(raw_stomp_url or "", kind=args.broker)
            if args.command == "run"
            else None
        )
    except ValueError as exc:  # SecretError is one
        raise errors.ConfigError(str(exc)) from exc
    if broker_config is None:
        broker_config = stomp_url.BrokerConfig(endpoints=())
    if not args.destination.startswith(("/topic/", "/queue/")):
        raise errors.ConfigError("CDC_DESTINATION must start with /topic/ or /queue/")
    return settings.Settings(
        database_url=database_url,
        broker=broker_config,
        destination=args.destination,
        batch_size=args.batch_size,
        fallback_interval=args.fallback_interval,
        heartbeat=args.heartbeat,
        receipt_timeout=args.receipt_timeout,
        metrics_port=args.metrics_port,
        ssl_ca_file=args.ssl_ca_file,
    )


def check_database(
    config: settings.Settings, *, stop: threading.Event | None = None
) -> database.Connection:
    """Connect once and make sure the schema is there; DatabaseUnavailable otherwise."""
    where = db_url.redact(config.database_url)
    try:
        conn = database.connect(config.database_url, stop=stop)
    except errors.DatabaseUnavailable as exc:
        raise errors.DatabaseUnavailable(f"cannot connect to {where}: {exc}") from exc
    with database.translated():
        row = conn.execute("SELECT to_regclass('cdc.change') IS NOT NULL").fetchone()
    if not (row and row[0]):
        conn.close()
        raise errors.DatabaseUnavailable(f"{where} has no cdc.change: run 'alembic upgrade head'")
    return conn


def check_broker(config: settings.Settings, *, stop: threading.Event | None = None) -> None:
    publisher = broker.Publisher(
        config.broker,
        destination=config.destination,
        heartbeat=config.heartbeat,
        ssl_ca_file=config.ssl_ca_file,
    )
    publisher.connect(stop=stop)
    publisher.close()


def serve_metrics(port: int) -> None:
    try:
        metrics.serve(port)
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise errors.MetricsUnavailable(f"cannot serve metrics on port {port}: {reason}") from exc


def run(config: settings.Settings) -> int:
    """The daemon. The stop signal is handled from the start: SIGTERM during the start-up
    checks (however long a silent server makes them) is a clean stop too."""
    with daemon.StopSignal() as stop:
        try:
            if config.metrics_port is not None:
                serve_metrics(config.metrics_port)
            database.close(check_database(config, stop=stop.event))
            check_broker(config, stop=stop.event)
        except errors.Stopping:
            logger.info("stopped during start-up", extra={"action": "stopped"})
            return 0
        logger.info(
            "relaying changes to %s on %s",
            config.destination,
            config.broker.redacted(),
            extra={"action": "started"},
        )
        relay.Relay(config, stop.event).run()
    return 0


def show_status(config: settings.Settings) -> int:
    conn = check_database(config)
    try:
        current = status.read(conn)
    finally:
        conn.close()
    print("\n".join(current.lines()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level, json=args.log_json)
    try:
        config = load_settings(args)
    except errors.ConfigError as exc:
        print(f"cdc-relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return show_status(config) if args.command == "status" else run(config)
    except (
        errors.DatabaseUnavailable,
        errors.BrokerUnavailable,
        errors.MetricsUnavailable,
    ) as exc:
        print(f"cdc-relay: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
