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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import exc as sa_exc

from generator import errors, memo, model, schema
from machinedb import db_url

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds
STATEMENT_TIMEOUT = 60_000  # milliseconds
BATCH_ROWS = 5000  # interface rows received and turned into objects at a time

_subnet = schema.metadata.tables["subnet"]
_host = schema.metadata.tables["host"]
_interface = schema.metadata.tables["interface"]
_other_subnet = _subnet.alias("other")

SUBNETS = sqlalchemy.select(
    _subnet.c.id,
    _subnet.c.name,
    _subnet.c.network,
    _subnet.c.gateway,
    _subnet.c.domain_name,
    _subnet.c.dns_servers,
    _subnet.c.pool_start,
    _subnet.c.pool_end,
    _subnet.c.lease_time,
).where(_subnet.c.dhcp_enabled)

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

INTERFACES = (
    sqlalchemy.select(
        _interface.c.id,
        _interface.c.host_id,
        _host.c.hostname,
        _interface.c.name,
        sqlalchemy.cast(_interface.c.mac, sqlalchemy.Text).label("mac"),
        _IP4.label("ip4"),
        _IP_TEXT.label("ip_text"),
    )
    .join(_host, _host.c.id == _interface.c.host_id)
    .where(
        _host.c.enabled,
        _interface.c.ip.is_not(None),
        ~sqlalchemy.exists().where(
            ~_other_subnet.c.dhcp_enabled,
            _other_subnet.c.network.op(">>=", is_comparison=True)(_interface.c.ip),
        ),
    )
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


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    inventory: model.Inventory
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


def read_inventory(engine: sqlalchemy.Engine) -> model.Inventory:
    """Everything one render needs, from one consistent snapshot."""
    return read_snapshot(engine).inventory


def read_snapshot(engine: sqlalchemy.Engine, rows: RowMemo | None = None) -> Snapshot:
    """The inventory, and which transactions it includes (to tell covered changes).

    With ``rows`` (kept from the previous read), a row that has not changed gives back
    the same ``model.Interface`` object, and making objects is most of a read's cost."""
    try:
        with engine.connect() as raw:
            conn = raw.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            with conn.begin():
                visibility = Visibility.parse(conn.execute(SNAPSHOT).scalar_one())
                subnets = tuple(_subnet_from_row(row) for row in conn.execute(SUBNETS).all())
                with collector_paused():
                    fetched = _stream(conn, INTERFACES)
                    made = (
                        map(_interface_from_row, fetched)
                        if rows is None
                        else rows.map(fetched, _interface_from_row)
                    )
                    interfaces = tuple(made)
    except (sa_exc.DBAPIError, psycopg.Error) as exc:
        raise DatabaseUnavailable(f"cannot read the machine database: {_first_line(exc)}") from exc
    logger.debug("read %d subnets and %d interfaces", len(subnets), len(interfaces))
    inventory = model.Inventory(subnets=subnets, interfaces=interfaces)
    return Snapshot(inventory=inventory, visibility=visibility)


def _stream(conn: sqlalchemy.Connection, statement: sqlalchemy.Select[Any]) -> Iterator[Any]:
    """The rows of ``statement``, received in chunks of ``BATCH_ROWS`` while the caller
    works on the previous ones.

    With libpq 17+ the server sends rows as it computes them, so on two cores the
    query and the making of objects overlap (a third off a 100,000-row read here), and
    only one chunk is held in memory at a time. SQLAlchemy builds the statement and owns
    the transaction; only the rows come from the driver's cursor, because
    ``stream_results`` would mean a server-side cursor and a round trip per batch.
    Without chunked mode, a client-side cursor fetches all rows in one go."""
    compiled = statement.compile(dialect=conn.dialect)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        if psycopg.capabilities.has_stream_chunked():
            yield from cursor.stream(str(compiled), compiled.params, size=BATCH_ROWS)
        else:
            cursor.execute(str(compiled), compiled.params)
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
    )


RowMemo = memo.ByValue[tuple[Any, ...], model.Interface]


def _interface_from_row(row: tuple[Any, ...]) -> model.Interface:
    id_, host_id, hostname, name, mac, ip4, ip_text = row
    ip = ipaddress.IPv4Address(ip4) if ip4 is not None else ipaddress.ip_address(ip_text)
    return model.Interface(id=id_, host_id=host_id, hostname=hostname, name=name, mac=mac, ip=ip)


def _first_line(exc: sa_exc.DBAPIError | psycopg.Error) -> str:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    text = str(orig) if orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
