"""``dhcp-generator``: render the DHCP server config from the machine database.

The environment is read here, once, into a frozen ``Settings``; flags win over it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import sqlalchemy

from generator import (
    apply,
    daemon,
    errors,
    failover,
    kea_hosts,
    model,
    omapi,
    passes,
    read,
    render,
    render_kea_agent,
    render_kea_ha,
    render_options,
    settings,
)
from generator import metrics as metrics_module
from machinedb import broker_profile, cli_args, db_url, logs, secrets, stomp_url
from machinedb import daemon as machinedb_daemon

logger = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_USAGE = cli_args.EXIT_USAGE
PROG = "dhcp-generator"
PREFETCH_MAX = 2**31 - 1  # messages; ActiveMQ reads prefetchSize as a Java int


def build_parser() -> argparse.ArgumentParser:
    parser = cli_args.Parser(
        prog=PROG,
        description=(
            "Render dhcpd.conf or kea-dhcp4.conf from the machine database, apply it"
            " atomically and reload the server when it changed. Runs as a daemon woken"
            " by change messages unless --once, --dry-run or --kea-ctrl-agent-config is"
            " given."
        ),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="render and apply once, then exit")
    mode.add_argument(
        "--dry-run",
        action="store_true",
        help="print a unified diff against the current file, then whether a real run would"
        " apply or refuse it (same wipe guard and syntax check); change nothing",
    )
    mode.add_argument(
        "--kea-ctrl-agent-config",
        metavar="PATH",
        type=Path,
        help="Kea HA: write the kea-ctrl-agent config of --server's side of its pair"
        " (dhcp_failover, mode kea-hot-standby, the default, or kea-load-balancing) to PATH,"
        " then exit: it listens on this server's pair address and port and forwards to"
        f" --kea-control-socket (default {render_options.KEA_CONTROL_SOCKET}); needs --format"
        " kea and --server",
    )
    parser.add_argument("--format", choices=render.FORMATS, default="isc", dest="fmt")
    parser.add_argument("--output", type=Path, help="config file (default: by format)")
    parser.add_argument(
        "--reload-command",
        help="command run after the file changed, e.g. 'systemctl restart isc-dhcp-server'"
        " (split like a shell would, run without one; gets DHCP_CONFIG in its environment)",
    )
    parser.add_argument(
        "--kea-control-socket",
        help="Kea: render this control socket and send config-reload through it on change",
    )
    parser.add_argument(
        "--kea-lease-file",
        help=f"Kea: memfile lease database to render (default {render_options.KEA_LEASE_FILE})",
    )
    parser.add_argument(
        "--kea-hooks-dir",
        metavar="DIR",
        help="Kea HA: absolute directory of libdhcp_ha.so and libdhcp_lease_cmds.so"
        f" (env KEA_HOOKS_DIR; default {render_options.KEA_HOOKS_DIR})",
    )
    parser.add_argument(
        "--omapi",
        metavar="HOST:PORT",
        help="ISC: send host changes to dhcpd's OMAPI here instead of restarting it"
        " (env DHCP_OMAPI; needs --omapi-key-file); the port is rendered as omapi-port",
    )
    parser.add_argument(
        "--omapi-key-file",
        metavar="FILE",
        help="ISC: a file holding dhcpd's 'key NAME { algorithm hmac-md5; secret \"...\"; };'"
        " statement, not readable by everyone; dhcpd.conf includes it by this path"
        " (env DHCP_OMAPI_KEY_FILE)",
    )
    parser.add_argument(
        "--kea-hosts-database",
        metavar="URL",
        help="Kea: write reservations into Kea's PostgreSQL hosts database (kea-admin db-init"
        " pgsql) as this login, instead of into the file (env KEA_HOSTS_DATABASE_URL, or a"
        " file named by KEA_HOSTS_DATABASE_URL_FILE)",
    )
    parser.add_argument(
        "--kea-hosts-reader",
        metavar="URL",
        help="Kea: how Kea itself reaches that database, rendered into hosts-database:"
        " postgresql://USER@HOST:PORT/DB, no password (Kea reads it from its PGPASSFILE);"
        " ?host=/DIR for a unix socket (env KEA_HOSTS_READER_URL; default: the"
        " --kea-hosts-database URL without its password)",
    )
    parser.add_argument(
        "--interface",
        action="append",
        default=[],
        help="Kea: interface to serve (repeatable)",
    )
    parser.add_argument(
        "--force", action="store_true", help="apply even when the wipe guard would refuse"
    )
    parser.add_argument(
        "--max-removal-share",
        type=cli_args.share,
        default=settings.MAX_REMOVAL_SHARE,
        help="refuse a render that removes more than this share of the reservations"
        " (and more than --removal-floor of them; default %(default)s)",
    )
    parser.add_argument(
        "--removal-floor",
        type=cli_args.non_negative_int,
        default=settings.REMOVAL_FLOOR,
        help="never refuse a render that removes at most this many reservations"
        " (default %(default)s)",
    )
    parser.add_argument(
        "--no-syntax-check",
        action="store_true",
        help="do not run dhcpd -t / kea-dhcp4 -t on the candidate",
    )
    parser.add_argument(
        "--metrics-port",
        type=cli_args.port,
        help=f"serve Prometheus metrics on this port (1-{cli_args.PORT_MAX})",
    )
    parser.add_argument(
        "--database-url",
        help="machine database (env DATABASE_URL, or a file named by DATABASE_URL_FILE)",
    )
    parser.add_argument(
        "--stomp-url",
        help="broker(s), comma-separated (env STOMP_URL, or a file named by STOMP_URL_FILE)",
    )
    parser.add_argument(
        "--broker",
        choices=broker_profile.KINDS,
        type=str.lower,
        help="the broker's kind (env STOMP_BROKER; default: detected from its CONNECTED frame)",
    )
    parser.add_argument("--destination", help="change topic (env CDC_DESTINATION)")
    parser.add_argument("--consumer", help="durable consumer name (env DHCP_CONSUMER)")
    parser.add_argument(
        "--prefetch",
        type=_prefetch,
        default=settings.PREFETCH,
        help="unacknowledged messages the broker may send ahead (default %(default)s)",
    )
    parser.add_argument(
        "--ssl-ca-file",
        help="CA certificates for stomp+ssl:// (env SSL_CA_FILE; default: the system's)",
    )
    parser.add_argument(
        "--window",
        type=cli_args.non_negative_seconds,
        default=settings.COALESCE_WINDOW,
        help="seconds between renders during a burst (default %(default)s)",
    )
    parser.add_argument(
        "--server",
        help="render only the subnets of this dhcp_server row, and their reservations"
        " (env DHCP_SERVER; default: every subnet)",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=cli_args.non_negative_seconds,
        default=settings.RECONCILE_INTERVAL,
        help="seconds between full reads that check (and correct) the state kept by"
        " incremental passes; 0 turns them off (default %(default)s)",
    )
    cli_args.add_log_arguments(parser)
    return parser


def load_settings(args: argparse.Namespace, env: Mapping[str, str]) -> settings.Settings:
    """Flags first, then the environment; ValueError with a one-line reason."""
    database_url = args.database_url or secrets.from_env("DATABASE_URL", env)
    if not database_url:
        raise ValueError(
            "DATABASE_URL is not set (e.g. postgresql://machinedb@localhost/machinedb)"
        )
    db_url.psycopg_url(database_url)  # validates the scheme
    stomp = args.stomp_url or secrets.from_env("STOMP_URL", env)
    broker_kind = args.broker or env.get("STOMP_BROKER") or None
    if stomp is not None:
        stomp_url.parse(stomp, kind=broker_kind)
    destination = args.destination or env.get("CDC_DESTINATION") or settings.DEFAULT_DESTINATION
    consumer_name = args.consumer or env.get("DHCP_CONSUMER") or settings.DEFAULT_CONSUMER
    fmt: render.Format = args.fmt
    server = args.server or env.get("DHCP_SERVER") or None
    if args.kea_ctrl_agent_config is not None and server is None:
        raise ValueError(
            "--kea-ctrl-agent-config needs --server NAME (env DHCP_SERVER): the agent's"
            " config is one server's side of its pair"
        )
    hooks_dir = args.kea_hooks_dir or env.get("KEA_HOOKS_DIR") or None
    hosts_database, reader = _kea_hosts(args, env)
    _check_kea_only(args)
    target = _omapi_target(args, env)
    omapi_options = (
        {}
        if target is None
        else {
            "omapi_port": target.port,
            "omapi_key_name": target.key.name,
            "omapi_key_file": target.key_file,
        }
    )
    options = render_options.RenderOptions(
        **omapi_options,  # type: ignore[arg-type]
        interfaces=tuple(args.interface),
        lease_file=args.kea_lease_file or render_options.KEA_LEASE_FILE,
        **({"control_socket": args.kea_control_socket} if args.kea_control_socket else {}),
        kea_hosts_database=reader,
        kea_hooks_dir=hooks_dir or render_options.KEA_HOOKS_DIR,
    )
    return settings.Settings(
        database_url=database_url,
        stomp_url=stomp,
        broker_kind=broker_kind.lower() if broker_kind else None,
        queue=settings.consumer_queue(destination, consumer_name),
        prefetch=args.prefetch,
        ssl_ca_file=args.ssl_ca_file or env.get("SSL_CA_FILE"),
        window=args.window,
        server=server,
        reconcile_interval=args.reconcile_interval,
        metrics_port=args.metrics_port,
        apply=settings.ApplySettings(
            fmt=fmt,
            output=args.output or Path(settings.DEFAULT_OUTPUT[fmt]),
            reload_command=tuple(shlex.split(args.reload_command or "")),
            kea_control_socket=args.kea_control_socket,
            force=args.force,
            max_removal_share=args.max_removal_share,
            removal_floor=args.removal_floor,
            syntax_check=not args.no_syntax_check,
            omapi=target,
            kea_hosts_database=hosts_database,
            options=options,
        ),
    )


def _kea_hosts(
    args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[str | None, render_options.KeaHostsDatabase | None]:
    """The generator's URL of Kea's hosts database, and what Kea is told of it."""
    url = args.kea_hosts_database or secrets.from_env("KEA_HOSTS_DATABASE_URL", env)
    reader_url = args.kea_hosts_reader or env.get("KEA_HOSTS_READER_URL") or None
    args.kea_hosts_database = url  # for _check_kea_only: the environment counts too
    if url is None:
        if reader_url is not None:
            raise ValueError("--kea-hosts-reader needs --kea-hosts-database")
        return None, None
    if args.fmt != "kea":
        return url, None  # refused by _check_kea_only
    reader = kea_hosts.reader_of(url, drop_password=True)  # also checks the URL
    if reader_url is not None:
        reader = kea_hosts.reader_of(reader_url)
    return url, reader


def _omapi_target(args: argparse.Namespace, env: Mapping[str, str]) -> settings.OmapiTarget | None:
    where = args.omapi or env.get("DHCP_OMAPI") or None
    key_file = args.omapi_key_file or env.get("DHCP_OMAPI_KEY_FILE") or None
    if where is None:
        if key_file is not None:
            raise ValueError("--omapi-key-file needs --omapi HOST:PORT (env DHCP_OMAPI)")
        return None
    if args.fmt != "isc":
        raise ValueError("--omapi needs --format isc: OMAPI is ISC dhcpd's")
    if key_file is None:
        raise ValueError("--omapi needs --omapi-key-file (env DHCP_OMAPI_KEY_FILE)")
    host, sep, port_text = where.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--omapi {where!r} must be HOST:PORT, e.g. 127.0.0.1:7911")
    port = cli_args.port(port_text)
    path = os.path.abspath(key_file)
    try:
        key = omapi.read_key_file(path)
    except omapi.KeyFileError as exc:
        raise ValueError(str(exc)) from exc
    return settings.OmapiTarget(host=host.strip("[]"), port=port, key=key, key_file=path)


# Flags that only mean something to Kea: with --format isc they would silently do nothing.
KEA_ONLY = {
    "kea_control_socket": "--kea-control-socket needs --format kea: ISC dhcpd has no"
    " control socket, reload it with --reload-command",
    "interface": "--interface needs --format kea: ISC dhcpd takes its interfaces on its"
    " own command line",
    "kea_lease_file": "--kea-lease-file needs --format kea: ISC dhcpd takes its lease file"
    " on its own command line (-lf)",
    "kea_hosts_database": "--kea-hosts-database (KEA_HOSTS_DATABASE_URL) needs --format kea:"
    " ISC dhcpd takes host changes over OMAPI (--omapi)",
    "kea_hooks_dir": "--kea-hooks-dir needs --format kea: ISC dhcpd loads no hooks",
    "kea_ctrl_agent_config": "--kea-ctrl-agent-config needs --format kea: ISC dhcpd's"
    " failover peers talk directly, without kea-ctrl-agent",
}


def _check_kea_only(args: argparse.Namespace) -> None:
    if args.fmt == "kea":
        return
    for name, reason in KEA_ONLY.items():
        if getattr(args, name):
            raise ValueError(reason)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level, json=args.log_json)
    try:
        config = load_settings(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc).splitlines()[0])
    metrics = metrics_module.Metrics()
    if args.dry_run:
        return _dry_run(config)
    if args.kea_ctrl_agent_config is not None:
        return _ctrl_agent_config(config, args.kea_ctrl_agent_config)
    if args.once:
        return _once(config, metrics)
    return _serve(config, metrics)


def _once(config: settings.Settings, metrics: metrics_module.Metrics) -> int:
    apply.remove_stale_candidates(config.apply.output)
    engine = read.make_engine(config.database_url)
    hosts = passes.omapi_client(config.apply)
    try:
        server = _server_id(engine, config)
        check_kea_hosts(config.apply)
        if config.apply.kea_hosts_database is not None:  # the rows, then the file
            pipeline = passes.Pipeline(engine, config=config.apply, metrics=metrics, server=server)
            try:
                ok = pipeline.full()
            finally:
                if pipeline.kea_hosts is not None:
                    pipeline.kea_hosts.close()
        elif hosts is None:
            ok = passes.render_pass(engine, config=config.apply, metrics=metrics, server=server)
        else:  # the difference from the file in place goes to dhcpd over OMAPI
            pipeline = passes.Pipeline(
                engine, config=config.apply, metrics=metrics, server=server, hosts=hosts
            )
            ok = pipeline.full()
    except errors.GeneratorError as exc:
        return _fail(str(exc))
    finally:
        engine.dispose()
        if hosts is not None:
            hosts.close()
    return 0 if ok is not None else EXIT_FAILED


def _server_id(engine: sqlalchemy.Engine, config: settings.Settings) -> int | None:
    return None if config.server is None else read.find_server(engine, config.server)


def check_kea_hosts(config: settings.ApplySettings) -> None:
    """At start: Kea's hosts database has the schema Kea 2.2 reads and this login may
    write it (``kea_hosts.KeaHostsError`` with a one-line reason if not)."""
    if config.kea_hosts_database is None:
        return
    database = kea_hosts.Database(url=db_url.psycopg_url(config.kea_hosts_database))
    try:
        version = database.check()
    finally:
        database.close()
    logger.info("Kea hosts database %s: schema %s", database.name, version)


def _serve(config: settings.Settings, metrics: metrics_module.Metrics) -> int:
    try:
        check_kea_hosts(config.apply)
    except errors.GeneratorError as exc:
        return _fail(str(exc))
    if config.metrics_port is not None:
        try:
            metrics.serve(config.metrics_port)
        except OSError as exc:
            return _fail(f"cannot serve metrics on port {config.metrics_port}: {exc}")
    try:
        with machinedb_daemon.StopSignal() as stop:
            daemon.run(config, stop=stop.event, metrics=metrics)
    except daemon.StartupError as exc:
        return _fail(str(exc))
    return 0


def _ctrl_agent_config(config: settings.Settings, target: Path) -> int:
    """Write the kea-ctrl-agent config of ``config.server``'s side of its Kea HA pair,
    read from the database as a pass reads the scope (its subnets carry the pair)."""
    assert config.server is not None  # load_settings requires --server
    engine = read.make_engine(config.database_url)
    try:
        server = read.find_server(engine, config.server)
        subnets = read.read_into(engine, _subnets_only, server=server).inventory
        # the checks a pass makes before writing (failover.Refused is a GeneratorError)
        failover.refuse_unfit(subnets, fmt=render_kea_ha.FORMAT, options=config.apply.options)
        pair = render_kea_ha.pair_of(subnets)
        if pair is None:
            raise errors.GeneratorError(
                f"DHCP server {config.server!r} is in no Kea HA pair: no dhcp_failover row"
                " names it, or it serves no subnet with DHCP on"
            )
        text = render_kea_agent.render(pair, options=config.apply.options)
    except errors.GeneratorError as exc:
        return _fail(str(exc))
    finally:
        engine.dispose()
    try:
        apply.write_atomically(text, target=target)
    except OSError as exc:
        return _fail(f"cannot write {target}: {exc}")
    logger.info(
        "wrote the kea-ctrl-agent config of %s (pair %s, %s) to %s: listening on %s port %d",
        pair.server_name,
        pair.name,
        pair.effective_mode(render_kea_ha.FORMAT),
        target,
        pair.address,
        pair.port,
        extra={"action": "ctrl_agent_config_written"},
    )
    return 0


def _subnets_only(
    subnets: tuple[model.Subnet, ...], interfaces: Iterator[model.Interface]
) -> tuple[model.Subnet, ...]:
    """A ``read.read_into`` build that leaves the interfaces unread (never fetched)."""
    return subnets


def _dry_run(config: settings.Settings) -> int:
    """Print the diff a real run would apply, then (on stderr) what it would do with it:
    the same wipe guard and syntax check run, nothing is written or reloaded. Exit 1
    when a real run would refuse the render, as ``--once`` would."""
    engine = read.make_engine(config.database_url)
    try:
        server = _server_id(engine, config)
        document, _ = passes.prepare(
            engine, config=config.apply, metrics=metrics_module.Metrics(), server=server
        )
    except errors.GeneratorError as exc:
        return _fail(str(exc))
    finally:
        engine.dispose()
    target = config.apply.output
    current = apply.read_current(target) or ""
    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        document.text.splitlines(keepends=True),
        fromfile=str(target),
        tofile=f"{target} (rendered)",
    )
    try:
        sys.stdout.writelines(diff)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    apply_config = config.apply
    if apply_config.kea_hosts_database is not None:
        # The file holds no reservations: the wipe guard counts rows (--once runs it).
        apply_config = dataclasses.replace(apply_config, max_removal_share=1.0)
    preview = apply.preview(document.text, config=apply_config)
    print(f"{PROG}: dry run: {_verdict(preview, config.apply)}", file=sys.stderr)
    return EXIT_FAILED if preview.refusal is not None else 0


def _verdict(preview: apply.Preview, config: settings.ApplySettings) -> str:
    """One line: what a real run would do with the rendered file."""
    if preview.refusal is not None:
        return f"a real run would refuse this render and keep {config.output}: {preview.refusal}"
    if not preview.changed:
        if preview.reload:
            return "no change; a real run would reload the file (the server never loaded it)"
        return "no change; a real run would write and reload nothing"
    if preview.check is None:
        checked = "syntax check off (--no-syntax-check)"
    elif preview.check.skipped:
        checked = f"not checked: {preview.check.output}"
    else:
        checked = f"{preview.check.checker} accepts it"
    reload = " and reload" if preview.reload else ""
    return (
        f"a real run would write{reload} {config.output} with {preview.reservations}"
        f" reservations (now {preview.previous_reservations}); {checked}"
    )


def _fail(reason: str) -> int:
    print(f"dhcp-generator: {reason.splitlines()[0] if reason else 'failed'}", file=sys.stderr)
    return EXIT_FAILED


def _prefetch(text: str) -> int:
    return cli_args.integer(
        text, low=1, high=PREFETCH_MAX, what=f"a whole number from 1 to {PREFETCH_MAX}"
    )


if __name__ == "__main__":
    sys.exit(main())
