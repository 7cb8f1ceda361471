"""Read what a render needs from the machine database, as one consistent snapshot.

One read-only REPEATABLE READ transaction, SQLAlchemy Core, only the columns a render
uses: no ORM objects are built, so 100,000 hosts read in a fraction of a second.
Driver errors are translated here, at one choke point, into ``DatabaseUnavailable``.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
import sqlalchemy
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import util as sql_util

from generator import errors, model, schema
from machinedb import db_url

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds
STATEMENT_TIMEOUT = 60_000  # milliseconds
BATCH_ROWS = 5000  # interface rows received and turned into objects at a time

_subnet = schema.metadata.tables["subnet"]
_host = schema.metadata.tables["host"]
_hardware_type = schema.metadata.tables["hardware_type"]
_interface = schema.metadata.tables["interface"]
_server = schema.metadata.tables["dhcp_server"]
_served = schema.metadata.tables["dhcp_server_subnet"]
_failover = schema.metadata.tables["dhcp_failover"]
_pair_primary = _server.alias("pair_primary")
_pair_secondary = _server.alias("pair_secondary")
_other_subnet = _subnet.alias("other")
_scope_subnet = _subnet.alias("scoped")

# The DHCP server whose scope a read covers; None reads every subnet.
_SERVER = sqlalchemy.bindparam("server", type_=sqlalchemy.BigInteger)

_SUBNET_COLUMNS = (
    _subnet.c.id,
    _subnet.c.name,
    _subnet.c.network,
    _subnet.c.gateway,
    _subnet.c.domain_name,
    _subnet.c.dns_servers,
    _subnet.c.pool_start,
    _subnet.c.pool_end,
    _subnet.c.lease_time,
    _subnet.c.next_server,
    _subnet.c.boot_file,
    _subnet.c.boot_file_bios,
    _subnet.c.boot_file_uefi_x64,
    _subnet.c.boot_file_uefi_arm64,
)
SUBNETS = sqlalchemy.select(*_SUBNET_COLUMNS).where(_subnet.c.dhcp_enabled)


def _failover_columns() -> tuple[sqlalchemy.ColumnElement[Any], ...]:
    """The scope server's side of its pair (migration 0008), NULLs when it has none:
    each value of "this server" is the primary's or the secondary's column by role."""
    pair = _failover
    primary = pair.c.primary_server_id == _SERVER

    def side(mine: sqlalchemy.ColumnElement[Any], theirs: sqlalchemy.ColumnElement[Any]) -> Any:
        return sqlalchemy.case((primary, mine), else_=theirs)

    return (
        pair.c.name.label("failover_name"),
        pair.c.mode.label("failover_mode"),
        sqlalchemy.case((primary, "primary"), else_="secondary").label("failover_role"),
        side(pair.c.primary_address, pair.c.secondary_address).label("failover_address"),
        side(pair.c.primary_port, pair.c.secondary_port).label("failover_port"),
        side(pair.c.secondary_address, pair.c.primary_address).label("failover_peer_address"),
        side(pair.c.secondary_port, pair.c.primary_port).label("failover_peer_port"),
        side(_pair_primary.c.name, _pair_secondary.c.name).label("failover_server_name"),
        side(_pair_secondary.c.name, _pair_primary.c.name).label("failover_peer_name"),
        pair.c.mclt,
        pair.c.max_response_delay,
        pair.c.max_unacked_updates,
        pair.c.load_balance_max_seconds,
        pair.c.split,
        pair.c.heartbeat_delay_ms,
        pair.c.max_response_delay_ms,
        pair.c.max_ack_delay_ms,
        pair.c.max_unacked_clients,
    )


SCOPED_SUBNETS = (
    sqlalchemy.select(*_SUBNET_COLUMNS, *_failover_columns())
    .select_from(
        _subnet.outerjoin(
            _failover,
            sqlalchemy.or_(
                _failover.c.primary_server_id == _SERVER,
                _failover.c.secondary_server_id == _SERVER,
            ),
        )
        .outerjoin(_pair_primary, _pair_primary.c.id == _failover.c.primary_server_id)
        .outerjoin(_pair_secondary, _pair_secondary.c.id == _failover.c.secondary_server_id)
    )
    .where(
        _subnet.c.dhcp_enabled,
        sqlalchemy.exists().where(
            _served.c.subnet_id == _subnet.c.id, _served.c.dhcp_server_id == _SERVER
        ),
    )
)

# Candidate reservations: an address, an enabled host, and not inside a subnet that
# has DHCP turned off. Addresses in no subnet at all (legacy rows) are kept, so that
# validation names them instead of their silently vanishing.
# An IPv4 address travels as its integer (IPv4Address(int) is ~20x cheaper than
# parsing text); anything else (legacy IPv6 rows) as text, for validation to name.
_ip = _interface.c.ip
_IS_V4 = sqlalchemy.func.family(_ip) == 4
_IP4 = sqlalchemy.case(
    (
        _IS_V4,
        _ip.op("-", return_type=sqlalchemy.BigInteger)(
            sqlalchemy.literal_column("'0.0.0.0'::inet")
        ),
    )
)
_IP_TEXT = sqlalchemy.case((~_IS_V4, sqlalchemy.func.host(_ip)))


def _boot_columns() -> tuple[sqlalchemy.ColumnElement[Any], ...]:
    """A reservation's boot options, host over hardware type (``model.Boot``): the next
    server and boot file of the first level that sets them; an architecture's file from
    the host (its own, else its boot file), else from the hardware type likewise."""
    host, kind = _host.c, _hardware_type.c
    coalesce = sqlalchemy.func.coalesce
    columns = [
        coalesce(host.next_server, kind.next_server).label("next_server"),
        coalesce(host.boot_file, kind.boot_file).label("boot_file"),
    ]
    for column in schema.BOOT_FILE_COLUMNS[1:]:
        chain = (host[column], host.boot_file, kind[column], kind.boot_file)
        columns.append(coalesce(*chain).label(column))
    return tuple(columns)


_ROW_COLUMNS = (
    _interface.c.id,
    _interface.c.host_id,
    _host.c.hostname,
    _interface.c.name,
    sqlalchemy.cast(_interface.c.mac, sqlalchemy.Text).label("mac"),
    _IP4.label("ip4"),
    _IP_TEXT.label("ip_text"),
    *_boot_columns(),
)
_NOT_IN_DISABLED_SUBNET = ~sqlalchemy.exists().where(
    ~_other_subnet.c.dhcp_enabled,
    _other_subnet.c.network.op(">>=", is_comparison=True)(_interface.c.ip),
)
_CANDIDATE = sqlalchemy.and_(_host.c.enabled, _interface.c.ip.is_not(None))
_WANTED = sqlalchemy.and_(_CANDIDATE, _NOT_IN_DISABLED_SUBNET)
# Inside a DHCP subnet of the server's scope (the subnets of a scope never overlap a
# DHCP-off subnet, which the database refuses).
_IN_SCOPE = sqlalchemy.exists().where(
    _served.c.subnet_id == _scope_subnet.c.id,
    _served.c.dhcp_server_id == _SERVER,
    _scope_subnet.c.dhcp_enabled,
    _scope_subnet.c.network.op(">>=", is_comparison=True)(_interface.c.ip),
)
_JOINED = _interface.join(_host, _host.c.id == _interface.c.host_id).outerjoin(
    _hardware_type, _hardware_type.c.id == _host.c.hardware_type_id
)

INTERFACES = sqlalchemy.select(*_ROW_COLUMNS).select_from(_JOINED).where(_WANTED)
# The same when no subnet has DHCP off (the usual case): the per-row look at the
# subnets that have is most of the database's work in a read of 1,000,000 rows.
INTERFACES_ALL_ON = sqlalchemy.select(*_ROW_COLUMNS).select_from(_JOINED).where(_CANDIDATE)
ANY_DHCP_OFF = sqlalchemy.select(sqlalchemy.exists().where(~_subnet.c.dhcp_enabled))

# A scope's rows, found from its subnets: an index range scan on interface.ip per
# subnet (its first to its last address, as host addresses), not a scan of every row.
_scope_first = sqlalchemy.cast(
    sqlalchemy.func.host(sqlalchemy.func.network(_scope_subnet.c.network)), _ip.type
)
_scope_last = sqlalchemy.cast(
    sqlalchemy.func.host(sqlalchemy.func.broadcast(_scope_subnet.c.network)), _ip.type
)
SCOPED_INTERFACES = (
    sqlalchemy.select(*_ROW_COLUMNS)
    .select_from(
        _scope_subnet.join(_served, _served.c.subnet_id == _scope_subnet.c.id)
        .join(_interface, sqlalchemy.and_(_ip >= _scope_first, _ip <= _scope_last))
        .join(_host, _host.c.id == _interface.c.host_id)
        .outerjoin(_hardware_type, _hardware_type.c.id == _host.c.hardware_type_id)
    )
    # Subnets never overlap (the database refuses it), so an address inside a DHCP
    # subnet of the scope is in no DHCP-off subnet: no per-row look at those.
    .where(_served.c.dhcp_server_id == _SERVER, _scope_subnet.c.dhcp_enabled, _CANDIDATE)
)

# The rows a few messages name: interfaces by id and the interfaces of hosts by id,
# each with whether it is (still) a candidate reservation of the scope.
_IDS = sqlalchemy.bindparam("ids", type_=sqlalchemy.ARRAY(sqlalchemy.BigInteger))
_HOSTS = sqlalchemy.bindparam("hosts", type_=sqlalchemy.ARRAY(sqlalchemy.BigInteger))
_NAMED = sqlalchemy.or_(
    _interface.c.id == sqlalchemy.any_(_IDS), _interface.c.host_id == sqlalchemy.any_(_HOSTS)
)
NAMED_INTERFACES = (
    sqlalchemy.select(*_ROW_COLUMNS, _WANTED.label("wanted")).select_from(_JOINED).where(_NAMED)
)
SCOPED_NAMED_INTERFACES = (
    sqlalchemy.select(*_ROW_COLUMNS, sqlalchemy.and_(_WANTED, _IN_SCOPE).label("wanted"))
    .select_from(_JOINED)
    .where(_NAMED)
)

# Is a subnet (by id) in the scope, now? One indexed read for a subnet change.
SUBNET_IN_SCOPE = sqlalchemy.select(
    sqlalchemy.exists().where(
        _served.c.subnet_id == sqlalchemy.bindparam("subnet", type_=sqlalchemy.BigInteger),
        _served.c.dhcp_server_id == _SERVER,
    )
)
SERVER_BY_NAME = sqlalchemy.select(_server.c.id, _server.c.name).where(
    sqlalchemy.func.lower(_server.c.name) == sqlalchemy.func.lower(sqlalchemy.bindparam("name"))
)

SNAPSHOT = sqlalchemy.select(sqlalchemy.func.pg_current_snapshot().cast(sqlalchemy.Text))


@dataclass(frozen=True, kw_only=True)
class Visibility:
    """Which transactions a snapshot saw (``pg_current_snapshot()``: xmin:xmax:xip)."""

    xmin: int
    xmax: int
    in_progress: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Visibility:
        xmin, xmax, xip = text.split(":")
        return cls(
            xmin=int(xmin),
            xmax=int(xmax),
            in_progress=frozenset(int(x) for x in xip.split(",") if x),
        )

    def saw(self, txid: int) -> bool:
        """True if a committed transaction ``txid`` is visible in the snapshot."""
        return txid < self.xmin or (txid < self.xmax and txid not in self.in_progress)


Built = TypeVar("Built")


@dataclass(frozen=True, kw_only=True)
class Snapshot(Generic[Built]):
    inventory: Built  # what was built from the rows: a model.Inventory, or a state
    visibility: Visibility


class DatabaseUnavailable(errors.GeneratorError):
    """The database could not be reached or the snapshot could not be read."""


def make_engine(url: str) -> sqlalchemy.Engine:
    """An engine for snapshots: one pooled connection, checked before each use."""
    return sqlalchemy.create_engine(
        db_url.sqlalchemy_url(url),
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "dhcp-generator",
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT}",
        },
    )


def read_inventory(engine: sqlalchemy.Engine, *, server: int | None = None) -> model.Inventory:
    """Everything one render needs, from one consistent snapshot."""
    return read_snapshot(engine, server=server).inventory


def read_snapshot(
    engine: sqlalchemy.Engine, *, server: int | None = None
) -> Snapshot[model.Inventory]:
    """The inventory (of ``server``'s scope, or of every subnet), and which transactions
    it includes (to tell covered changes)."""
    return read_into(engine, _inventory, server=server)


def _inventory(
    subnets: tuple[model.Subnet, ...], interfaces: Iterator[model.Interface]
) -> model.Inventory:
    return model.Inventory(subnets=subnets, interfaces=tuple(interfaces))


def read_into(
    engine: sqlalchemy.Engine,
    build: Callable[[tuple[model.Subnet, ...], Iterator[model.Interface]], Built],
    *,
    server: int | None = None,
) -> Snapshot[Built]:
    """``build(subnets, interfaces)`` over one snapshot of the scope, the interfaces
    streamed as they arrive (a state built from them never holds them all at once)."""
    subnets_query, interfaces_query = (
        (SUBNETS, INTERFACES) if server is None else (SCOPED_SUBNETS, SCOPED_INTERFACES)
    )
    params = {} if server is None else {"server": server}
    try:
        with _snapshot(engine) as conn:
            visibility = Visibility.parse(conn.execute(SNAPSHOT).scalar_one())
            subnet_rows = conn.execute(subnets_query, params).all()
            subnets = tuple(_subnet_from_row(row) for row in subnet_rows)
            if server is None and not conn.execute(ANY_DHCP_OFF).scalar_one():
                interfaces_query = INTERFACES_ALL_ON
            with collector_paused():
                fetched = _stream(conn, interfaces_query, params)
                built = build(subnets, map(_interface_from_row, fetched))
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise DatabaseUnavailable(f"cannot read the machine database: {_first_line(exc)}") from exc
    logger.debug("read %d subnets", len(subnets))
    return Snapshot(inventory=built, visibility=visibility)


@dataclass(frozen=True, kw_only=True)
class Named:
    """The rows some messages named, re-read in one snapshot."""

    visibility: Visibility
    wanted: tuple[model.Interface, ...]  # candidate reservations of the scope now
    gone: frozenset[int]  # ids named (or of a named host) that are no candidates now
    subnets_in_scope: frozenset[int]  # of the subnet ids asked about, those in scope


def read_named(
    engine: sqlalchemy.Engine,
    *,
    interface_ids: Collection[int] = (),
    host_ids: Collection[int] = (),
    subnet_ids: Collection[int] = (),
    server: int | None = None,
) -> Named:
    """Re-read the interfaces ``interface_ids`` and those of ``host_ids``; an id not
    found has been deleted. With ``server``, also which of ``subnet_ids`` it serves.
    A few index lookups, whatever the size of the inventory."""
    query = NAMED_INTERFACES if server is None else SCOPED_NAMED_INTERFACES
    params: dict[str, object] = {"ids": sorted(interface_ids), "hosts": sorted(host_ids)}
    if server is not None:
        params["server"] = server
    wanted: list[model.Interface] = []
    found: set[int] = set()
    in_scope: set[int] = set()
    try:
        with _snapshot(engine) as conn:
            visibility = Visibility.parse(conn.execute(SNAPSHOT).scalar_one())
            if interface_ids or host_ids:
                for row in conn.execute(query, params):
                    found.add(row.id)
                    if row.wanted:
                        wanted.append(_interface_from_row(tuple(row)[:_ROW_WIDTH]))
            if server is not None:
                for subnet in sorted(subnet_ids):
                    check = {"subnet": subnet, "server": server}
                    if conn.execute(SUBNET_IN_SCOPE, check).scalar_one():
                        in_scope.add(subnet)
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise DatabaseUnavailable(f"cannot read the machine database: {_first_line(exc)}") from exc
    kept = {row.id for row in wanted}
    gone = (set(interface_ids) | found) - kept
    return Named(
        visibility=visibility,
        wanted=tuple(wanted),
        gone=frozenset(gone),
        subnets_in_scope=frozenset(in_scope),
    )


class UnknownServer(errors.GeneratorError):
    """``--server`` names no row of ``dhcp_server``."""


def find_server(engine: sqlalchemy.Engine, name: str) -> int:
    """The id of the DHCP server called ``name`` (whatever its case)."""
    try:
        with engine.connect() as conn:
            row = conn.execute(SERVER_BY_NAME, {"name": name}).first()
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise DatabaseUnavailable(f"cannot read the machine database: {_first_line(exc)}") from exc
    if row is None:
        raise UnknownServer(
            f"DHCP server {name!r} is not in the dhcp_server table"
            " (INSERT INTO dhcp_server (name) VALUES (...), then link its subnets)"
        )
    return int(row.id)


def tables_read(*, server: int | None) -> frozenset[str]:
    """The tables whose rows a render reads: a change elsewhere cannot change it."""
    statements = (
        (SUBNETS, INTERFACES, NAMED_INTERFACES)
        if server is None
        else (SCOPED_SUBNETS, SCOPED_INTERFACES, SCOPED_NAMED_INTERFACES, SUBNET_IN_SCOPE)
    )
    return frozenset(
        table.name
        for statement in statements
        for table in sql_util.find_tables(statement, include_aliases=False, check_columns=True)
        if isinstance(table, sqlalchemy.Table)
    ) | frozenset(
        alias.element.name
        for statement in statements
        for alias in sql_util.find_tables(statement, include_aliases=True, check_columns=True)
        if isinstance(alias, sqlalchemy.Alias) and isinstance(alias.element, sqlalchemy.Table)
    )


@contextlib.contextmanager
def _snapshot(engine: sqlalchemy.Engine) -> Iterator[sqlalchemy.Connection]:
    """A read-only REPEATABLE READ transaction: every query in it sees one snapshot."""
    with engine.connect() as raw:
        conn = raw.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def _stream(
    conn: sqlalchemy.Connection,
    statement: sqlalchemy.Select[Any],
    params: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """The rows of ``statement``, received in chunks of ``BATCH_ROWS`` while the caller
    works on the previous ones.

    With libpq 17+ the server sends rows as it computes them, so on two cores the
    query and the making of objects overlap (a third off a 100,000-row read here), and
    only one chunk is held in memory at a time. SQLAlchemy builds the statement and owns
    the transaction; only the rows come from the driver's cursor, because
    ``stream_results`` would mean a server-side cursor and a round trip per batch.
    Without chunked mode, a client-side cursor fetches all rows in one go."""
    compiled = statement.compile(dialect=conn.dialect)
    values = compiled.construct_params(params or {})
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        if psycopg.capabilities.has_stream_chunked():
            yield from cursor.stream(str(compiled), values, size=BATCH_ROWS)
        else:
            cursor.execute(str(compiled), values)
            while batch := cursor.fetchmany(BATCH_ROWS):
                yield from batch


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector for a bulk step.

    A pass makes 100,000s of acyclic objects (freed by reference counting alone);
    without this the collector runs full passes over them and over everything a
    daemon keeps between passes (about 40% of the read at 100k hosts)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def check_connection(engine: sqlalchemy.Engine) -> None:
    """Raise ``DatabaseUnavailable`` unless the database answers a trivial query."""
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sa_exc.DBAPIError as exc:
        raise DatabaseUnavailable(f"cannot reach the machine database: {_first_line(exc)}") from exc


def _subnet_from_row(row: Any) -> model.Subnet:
    boot = _boot(
        row.next_server,
        row.boot_file,
        row.boot_file_bios,
        row.boot_file_uefi_x64,
        row.boot_file_uefi_arm64,
    )
    return model.Subnet(
        id=row.id,
        name=row.name,
        network=row.network,
        gateway=row.gateway,
        domain_name=row.domain_name,
        dns_servers=tuple(row.dns_servers or ()),
        pool_start=row.pool_start,
        pool_end=row.pool_end,
        lease_time=row.lease_time,
        boot=boot,
        failover=_failover_from_row(row),
    )


def _failover_from_row(row: Any) -> model.Failover | None:
    """The pair columns of a scoped subnet row, None without a pair (or unscoped)."""
    mapping = row._mapping
    if mapping.get("failover_name") is None:
        return None
    return model.Failover(
        name=row.failover_name,
        mode=row.failover_mode,
        role=row.failover_role,
        address=row.failover_address,
        port=row.failover_port,
        peer_address=row.failover_peer_address,
        peer_port=row.failover_peer_port,
        server_name=row.failover_server_name,
        peer_name=row.failover_peer_name,
        mclt=row.mclt,
        max_response_delay=row.max_response_delay,
        max_unacked_updates=row.max_unacked_updates,
        load_balance_max_seconds=row.load_balance_max_seconds,
        split=row.split,
        heartbeat_delay_ms=row.heartbeat_delay_ms,
        max_response_delay_ms=row.max_response_delay_ms,
        max_ack_delay_ms=row.max_ack_delay_ms,
        max_unacked_clients=row.max_unacked_clients,
    )


_ROW_WIDTH = len(_ROW_COLUMNS)


def _interface_from_row(row: tuple[Any, ...]) -> model.Interface:
    id_, host_id, hostname, name, mac, ip4, ip_text, *boot_values = row
    ip = ipaddress.IPv4Address(ip4) if ip4 is not None else ipaddress.ip_address(ip_text)
    # nearly every row has one of a few names ("eth0"): share one string, not a million
    name = sys.intern(name) if type(name) is str else name
    return model.Interface(
        id=id_,
        host_id=host_id,
        hostname=hostname,
        name=name,
        mac=mac,
        ip=ip,
        boot=_boot(*boot_values),
    )


def _boot(
    next_server: Any,
    file: Any,
    file_bios: Any,
    file_uefi_x64: Any,
    file_uefi_arm64: Any,
) -> model.Boot | None:
    """The boot options of a row, or None when it sets none (nearly every row)."""
    if (
        next_server is None
        and file is None
        and file_bios is None
        and file_uefi_x64 is None
        and file_uefi_arm64 is None
    ):
        return None
    return model.Boot(
        next_server=next_server,
        file=file,
        file_bios=file_bios,
        file_uefi_x64=file_uefi_x64,
        file_uefi_arm64=file_uefi_arm64,
    )


def _first_line(exc: sa_exc.DBAPIError | psycopg.Error) -> str:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    text = str(orig) if orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
