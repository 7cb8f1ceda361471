"""Reservations in Kea's PostgreSQL hosts database (``--kea-hosts-database``).

Kea 2.2 reads reservations from its ``hosts`` table on every lookup, with no cache: a
committed row is served at the next packet, with no ``config-reload``. Subnets, pools
and options stay in the file. Kea checks nothing on rows written this way, so every
write is checked here first, against the rendered file it goes with:

- the subnet id is a ``subnet4[].id`` of the file;
- the address lies inside that subnet (not its network or broadcast address) and
  outside its pools;
- one reservation per MAC per subnet, and one per address per subnet (Kea 2.2's
  schema no longer makes the address unique);
- the wipe guard (``apply.check_removal``) on the number of rows.

A write is one transaction of row changes, the difference between what the table
holds and what the state says: an incremental pass reads and changes only the rows
that share a MAC or an address with a changed reservation, a full pass (on start and
after every full read) compares the whole table, so the table converges after any
crash. A failed transaction leaves the previous rows in place.

The generator owns every DHCPv4 row (``dhcp4_subnet_id`` set) of that database;
DHCPv6 rows are left alone. Its login needs SELECT, INSERT, UPDATE and DELETE on
``hosts``, USAGE on ``hosts_host_id_seq`` and SELECT on ``schema_version``, nothing more
(see docs/deployment.md).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from generator import (
    apply,
    errors,
    model,
    render,
    render_kea,
    render_options,
    settings,
    state,
    validate,
)
from generator import metrics as metrics_module
from machinedb import db_url

logger = logging.getLogger(__name__)

SCHEMA_MAJOR = 13  # the hosts schema of Kea 2.2 (kea-admin db-init pgsql)
HW_ADDRESS = 0  # hosts.dhcp_identifier_type of a MAC address
# pg_advisory_xact_lock key: one writer at a time per hosts database ("mdbkea").
LOCK_KEY = 0x6D64_626B_6561
CONNECT_TIMEOUT = 5  # seconds
SHOWN_PROBLEMS = 5  # problems named in a refusal
MAC_BYTES = 6
HOSTNAME_LIMIT = 255  # characters: hosts.hostname is varchar(255)

_COLUMNS = (
    "host_id, dhcp_identifier, dhcp_identifier_type, dhcp4_subnet_id, ipv4_address, hostname,"
    " dhcp4_next_server, dhcp4_boot_file_name, dhcp4_client_classes"
)
READ_ALL = f"SELECT {_COLUMNS} FROM hosts WHERE dhcp4_subnet_id IS NOT NULL"
# The rows that share a MAC or an address with a changed reservation, in any subnet.
READ_TOUCHED = (
    READ_ALL + " AND (dhcp_identifier = ANY(%(macs)s) OR ipv4_address = ANY(%(addresses)s))"
)
COUNT = "SELECT count(*) FROM hosts WHERE dhcp4_subnet_id IS NOT NULL"
DELETE = "DELETE FROM hosts WHERE host_id = ANY(%s)"
UPDATE = (
    "UPDATE hosts SET ipv4_address = %s, hostname = %s, dhcp4_next_server = %s,"
    " dhcp4_boot_file_name = %s, dhcp4_client_classes = %s WHERE host_id = %s"
)
COPY_IN = (
    "COPY hosts (dhcp_identifier, dhcp_identifier_type, dhcp4_subnet_id, ipv4_address,"
    " hostname, dhcp4_next_server, dhcp4_boot_file_name, dhcp4_client_classes) FROM STDIN"
)
SCHEMA_VERSION = "SELECT version, minor FROM schema_version"
PRIVILEGES = (
    "SELECT has_table_privilege('hosts', 'SELECT, INSERT, UPDATE, DELETE')"
    " AND has_sequence_privilege('hosts_host_id_seq', 'USAGE')"
)


class KeaHostsError(errors.GeneratorError):
    """Root of this module's errors."""


class SchemaMismatch(KeaHostsError):
    """The database is not a Kea 2.2 hosts database, or the login may not write it."""


class Unavailable(KeaHostsError):
    """The hosts database could not be reached or the transaction failed: nothing changed."""


class Refused(KeaHostsError):
    """Rows failed the checks: nothing was written."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    """One DHCPv4 reservation by MAC, as Kea's ``hosts`` table holds it."""

    subnet_id: int
    mac: bytes
    address: int
    hostname: str | None
    # PXE (render_kea.reservation_boot): a boot change is a row update, no reload
    next_server: int | None = None
    boot_file_name: str | None = None
    client_classes: str | None = None

    @property
    def key(self) -> tuple[int, bytes]:
        return (self.subnet_id, self.mac)

    def describe(self) -> str:
        mac = ":".join(f"{b:02x}" for b in self.mac)
        return f"{mac} -> {ipaddress.IPv4Address(self.address)} in subnet {self.subnet_id}"


def row_of(interface: model.Interface, subnet_id: int) -> Row:
    """The row of a reservation ``validate.check`` kept."""
    boot = {} if interface.boot is None else render_kea.reservation_boot(interface.boot)
    next_server = boot.get("next-server")
    classes = boot.get("client-classes") or []
    return Row(
        subnet_id=subnet_id,
        mac=bytes.fromhex(interface.mac.replace(":", "")),
        address=int(interface.ip),
        hostname=interface.hostname,
        next_server=None if next_server is None else int(ipaddress.IPv4Address(next_server)),
        boot_file_name=boot.get("boot-file-name"),
        client_classes=",".join(classes) or None,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Stored:
    """A row as read from the table, with what identifies it there."""

    host_id: int
    identifier_type: int
    row: Row


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Row changes that turn the table into the wanted rows."""

    delete: tuple[int, ...] = ()  # host_id
    update: tuple[tuple[int, Row], ...] = ()  # (host_id, new values)
    insert: tuple[Row, ...] = ()

    def __len__(self) -> int:
        return len(self.delete) + len(self.update) + len(self.insert)


def plan(stored: Iterable[_Stored], wanted: Iterable[Row]) -> Plan:
    """The difference between the ``stored`` rows and the ``wanted`` ones (by subnet and
    MAC): an address or name change is an update, keeping the row's id."""
    by_key = {row.key: row for row in wanted}
    delete, update, present = [], [], set()
    for item in stored:
        target = by_key.get(item.row.key) if item.identifier_type == HW_ADDRESS else None
        if target is None or item.row.key in present:
            delete.append(item.host_id)
            continue
        present.add(item.row.key)
        if target != item.row:
            update.append((item.host_id, target))
    insert = [row for key, row in by_key.items() if key not in present]
    insert.sort(key=lambda row: (row.subnet_id, row.address))
    return Plan(delete=tuple(sorted(delete)), update=tuple(update), insert=tuple(insert))


# -- checks ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FileSubnet:
    """A ``subnet4`` entry of the rendered file: what a row must agree with."""

    id: int
    network: ipaddress.IPv4Network
    pools: tuple[tuple[int, int], ...]  # first and last address of each pool


def file_subnets(config: Mapping[str, Any]) -> dict[int, FileSubnet]:
    """The subnets of a parsed kea-dhcp4.conf, by id."""
    found = {}
    for entry in config["Dhcp4"]["subnet4"]:
        network = ipaddress.IPv4Network(entry["subnet"])
        pools = []
        for pool in entry.get("pools", ()):
            text = pool["pool"]
            if "-" in text:
                first, last = (ipaddress.IPv4Address(part.strip()) for part in text.split("-"))
            else:
                block = ipaddress.IPv4Network(text)
                first, last = block.network_address, block.broadcast_address
            pools.append((int(first), int(last)))
        found[int(entry["id"])] = FileSubnet(
            id=int(entry["id"]), network=network, pools=tuple(pools)
        )
    return found


def problems(rows: Iterable[Row], subnets: Mapping[int, FileSubnet]) -> list[str]:
    """What is wrong with ``rows`` as reservations of a Kea serving ``subnets``."""
    found = []
    macs: set[tuple[int, bytes]] = set()
    addresses: set[tuple[int, int]] = set()
    for row in rows:
        fault = _fault(row, subnets)
        if fault is None and row.key in macs:
            fault = "a second reservation for this MAC in this subnet"
        if fault is None and (row.subnet_id, row.address) in addresses:
            fault = "a second reservation for this address in this subnet"
        if fault is not None:
            found.append(f"{row.describe()}: {fault}")
        macs.add(row.key)
        addresses.add((row.subnet_id, row.address))
    return found


def _fault(row: Row, subnets: Mapping[int, FileSubnet]) -> str | None:
    subnet = subnets.get(row.subnet_id)
    if subnet is None:
        return "no subnet4 of the config has this id"
    if len(row.mac) != MAC_BYTES:
        return "not a MAC address"
    misplaced = _placement(row.address, subnet)
    if misplaced is not None:
        return misplaced
    if row.hostname is not None and not (
        len(row.hostname) <= HOSTNAME_LIMIT and validate.is_rfc1123_name(row.hostname)
    ):
        return "the host name is not RFC 1123"
    return None


def _placement(address: int, subnet: FileSubnet) -> str | None:
    network = subnet.network
    first, last = int(network.network_address), int(network.broadcast_address)
    if not first <= address <= last:
        return f"outside the subnet {network}"
    if network.prefixlen < 31 and address in (first, last):
        return f"the network or broadcast address of {network}"
    if any(start <= address <= end for start, end in subnet.pools):
        return "inside a dynamic pool"
    return None


def check(rows: Sequence[Row], subnets: Mapping[int, FileSubnet]) -> None:
    """Raise ``Refused`` if any of ``rows`` fails a check."""
    found = problems(rows, subnets)
    if found:
        shown = "; ".join(found[:SHOWN_PROBLEMS])
        more = f" (and {len(found) - SHOWN_PROBLEMS} more)" if len(found) > SHOWN_PROBLEMS else ""
        raise Refused(
            f"refusing to write {len(found)} reservations into Kea's hosts table: {shown}{more}"
        )


# -- the database ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Guard:
    """The wipe guard's settings (``apply.check_removal``)."""

    max_share: float = settings.MAX_REMOVAL_SHARE
    floor: int = settings.REMOVAL_FLOOR
    force: bool = False


@dataclass(frozen=True, kw_only=True)
class Outcome:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __len__(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass(kw_only=True)
class Database:
    """The generator's connection to Kea's hosts database (opened on first use)."""

    url: str
    _conn: psycopg.Connection[Any] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(conninfo.conninfo_to_dict(self.url).get("dbname") or "?")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def check(self) -> str:
        """Connect and check the schema and the login's rights; the schema version."""
        self.close()
        return self._check(self._connection())

    def read(self) -> list[Row]:
        """Every DHCPv4 reservation in the table."""
        with self._failures():
            return [item.row for item in self._read(self._connection(), READ_ALL, None)]

    def sync(self, wanted: Sequence[Row], *, guard: Guard) -> Outcome:
        """Make the table's DHCPv4 rows equal to ``wanted`` (already checked)."""
        with self._failures(), self._transaction() as conn:
            stored = self._read(conn, READ_ALL, None)
            changes = plan(stored, wanted)
            self._guard(current=len(stored), new=len(wanted), guard=guard)
            return self._write(conn, changes)

    def change(self, before: Sequence[Row], now: Sequence[Row], *, guard: Guard) -> Outcome:
        """Replace the reservations ``before`` by ``now`` (already checked), looking only
        at the rows that share a MAC or an address with one of them."""
        macs = sorted({row.mac for row in (*before, *now)})
        addresses = sorted({row.address for row in (*before, *now)})
        with self._failures(), self._transaction() as conn:
            stored = self._read(conn, READ_TOUCHED, {"macs": macs, "addresses": addresses})
            changes = plan(stored, now)
            removed = len(changes.delete) - len(changes.insert)
            if removed > guard.floor:  # only then can the guard refuse: count the table
                row = conn.execute(COUNT).fetchone()
                current = int(row[0]) if row else 0
                self._guard(current=current, new=current - removed, guard=guard)
            return self._write(conn, changes)

    # -- internals -----------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
            except psycopg.Error as exc:
                raise Unavailable(
                    f"Kea hosts database {self.name}: cannot connect: {_first_line(exc)}"
                ) from exc
            try:
                self._check(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _check(self, conn: psycopg.Connection[Any]) -> str:
        try:
            version = conn.execute(SCHEMA_VERSION).fetchone()
        except psycopg.errors.UndefinedTable as exc:
            raise SchemaMismatch(
                f"Kea hosts database {self.name} has no Kea schema (no schema_version table):"
                " create it with kea-admin db-init pgsql"
            ) from exc
        except psycopg.Error as exc:
            raise SchemaMismatch(
                f"Kea hosts database {self.name}: cannot read schema_version: {_first_line(exc)}"
            ) from exc
        found = "none" if version is None else f"{version[0]}.{version[1]}"
        if version is None or int(version[0]) != SCHEMA_MAJOR:
            raise SchemaMismatch(
                f"Kea hosts database {self.name} has schema version {found}; Kea 2.2 needs"
                f" {SCHEMA_MAJOR}.x (kea-admin db-init / db-upgrade pgsql of Kea 2.2)"
            )
        try:
            allowed = conn.execute(PRIVILEGES).fetchone()
        except psycopg.Error as exc:
            raise SchemaMismatch(
                f"Kea hosts database {self.name}: no hosts table: {_first_line(exc)}"
            ) from exc
        if not (allowed and allowed[0]):
            raise SchemaMismatch(
                f"Kea hosts database {self.name}: this login may not write the hosts table"
                " (it needs SELECT, INSERT, UPDATE, DELETE on hosts and USAGE on"
                " hosts_host_id_seq)"
            )
        return found

    def _transaction(self) -> Any:
        conn = self._connection()
        return _Transaction(conn)

    def _failures(self) -> Any:
        return _Failures(self)

    @staticmethod
    def _read(
        conn: psycopg.Connection[Any], query: str, params: dict[str, Any] | None
    ) -> list[_Stored]:
        found = []
        for found_row in conn.execute(query, params):
            host_id, identifier, kind, subnet_id, address, hostname = found_row[:6]
            next_server, boot_file_name, client_classes = found_row[6:]
            row = Row(
                subnet_id=int(subnet_id),
                mac=bytes(identifier),
                address=-1 if address is None else int(address),
                hostname=hostname,
                next_server=None if next_server is None else int(next_server),
                boot_file_name=boot_file_name,
                client_classes=client_classes,
            )
            found.append(_Stored(host_id=host_id, identifier_type=kind, row=row))
        return found

    def _guard(self, *, current: int, new: int, guard: Guard) -> None:
        apply.check_removal(
            current=current,
            new=new,
            max_share=guard.max_share,
            force=guard.force,
            target=Path(f"Kea's hosts table in {self.name}"),
            floor=guard.floor,
        )

    @staticmethod
    def _write(conn: psycopg.Connection[Any], changes: Plan) -> Outcome:
        with conn.cursor() as cursor:
            if changes.delete:
                cursor.execute(DELETE, (list(changes.delete),))
            if changes.update:
                cursor.executemany(
                    UPDATE,
                    [
                        (
                            row.address,
                            row.hostname,
                            row.next_server,
                            row.boot_file_name,
                            row.client_classes,
                            host_id,
                        )
                        for host_id, row in changes.update
                    ],
                )
            if changes.insert:
                with cursor.copy(COPY_IN) as copy:
                    for row in changes.insert:
                        copy.write_row(
                            (
                                row.mac,
                                HW_ADDRESS,
                                row.subnet_id,
                                row.address,
                                row.hostname,
                                row.next_server,
                                row.boot_file_name,
                                row.client_classes,
                            )
                        )
        return Outcome(
            inserted=len(changes.insert), updated=len(changes.update), deleted=len(changes.delete)
        )


class _Transaction:
    """One transaction under the advisory lock; rolled back on any error."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._inner: Any = None

    def __enter__(self) -> psycopg.Connection[Any]:
        self._inner = self.conn.transaction()
        self._inner.__enter__()
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)


class _Failures:
    """Turn driver errors into ``Unavailable`` (and drop a broken connection)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, psycopg.Error):
            if isinstance(exc, psycopg.OperationalError):
                self.database.close()
            raise Unavailable(
                f"Kea hosts database {self.database.name}: {_first_line(exc)}; nothing changed"
            ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- the pipeline's side ---------------------------------------------------------------


def reader_of(url: str, *, drop_password: bool = False) -> render_options.KeaHostsDatabase:
    """What ``hosts-database`` tells Kea, from a ``postgresql://USER@HOST:PORT/DB`` URL.

    ValueError if the URL has a password (unless ``drop_password``): Kea's goes in its
    own password file, never into the rendered config."""
    try:
        params = conninfo.conninfo_to_dict(db_url.psycopg_url(url))
    except (ValueError, psycopg.Error) as exc:
        raise ValueError(
            "a Kea hosts database URL must look like postgresql://USER@HOST:PORT/DATABASE"
        ) from exc
    if params.get("password") and not drop_password:
        raise ValueError(
            "the Kea reader URL has a password: it would be written into kea-dhcp4.conf;"
            " give Kea its password in a PGPASSFILE instead (see docs/deployment.md)"
        )
    if not params.get("user") or not params.get("dbname"):
        raise ValueError("a Kea hosts database URL needs a user and a database name")
    try:
        return render_options.KeaHostsDatabase(
            name=str(params["dbname"]),
            host=str(params.get("host") or "localhost"),
            port=int(params.get("port") or 5432),
            user=str(params["user"]),
        )
    except errors.InvalidOptions as exc:
        raise ValueError(str(exc)) from exc


Change = tuple[model.Interface | None, model.Interface | None]  # (before, now)


class Writer:
    """Puts a pipeline state's reservations into the hosts database: the whole table is
    compared for a state not written yet (the first pass, and every full read), only
    the changed reservations' rows after that."""

    def __init__(self, database: Database, *, guard: Guard) -> None:
        self.database = database
        self.guard = guard
        self._written: object | None = None  # the state whose rows the table holds

    @classmethod
    def from_settings(cls, config: settings.ApplySettings) -> Writer:
        if config.kea_hosts_database is None:
            raise errors.InvalidOptions("no Kea hosts database is configured")
        guard = Guard(
            max_share=config.max_removal_share, floor=config.removal_floor, force=config.force
        )
        return cls(Database(url=db_url.psycopg_url(config.kea_hosts_database)), guard=guard)

    def put(
        self,
        current: state.State[Any],
        changed: Iterable[Change],
        *,
        document: render.Document,
        metrics: metrics_module.Metrics,
    ) -> bool:
        """Write the rows of ``current`` (``changed`` since the last call); True if the
        table now holds them. Failures are logged and counted, and change nothing."""
        try:
            outcome = self._put(current, changed, document=document)
        except (Refused, apply.WipeRefused) as exc:
            metrics.renders.labels("refused").inc()
            logger.error("%s", exc, extra={"action": "refused"})
            return False
        except KeaHostsError as exc:
            metrics.renders.labels("failed").inc()
            logger.error(
                "%s; keeping Kea's reservations as they are",
                exc,
                extra={"action": "kea_hosts_failed"},
            )
            return False
        if outcome:
            metrics.applies.labels("kea_hosts").inc()
            logger.info(
                "wrote %d reservation changes into Kea's hosts database"
                " (%d added, %d changed, %d removed)",
                len(outcome),
                outcome.inserted,
                outcome.updated,
                outcome.deleted,
                extra={"action": "kea_hosts_applied", "changes": len(outcome)},
            )
        return True

    def _put(
        self, current: state.State[Any], changed: Iterable[Change], *, document: render.Document
    ) -> Outcome:
        try:
            subnets = file_subnets(json.loads(document.text))
        except (ValueError, KeyError, TypeError) as exc:
            raise Refused(f"the rendered Kea config has no readable subnet4: {exc}") from exc
        index = validate.SubnetIndex(current.subnets)
        if current is not self._written:
            wanted = [_row(interface, index) for interface in current.interfaces()]
            check(wanted, subnets)
            outcome = self.database.sync(wanted, guard=self.guard)
            self._written = current
            return outcome
        pairs = list(changed)
        before = [_row(old, index) for old, _ in pairs if old is not None]
        now = [_row(new, index) for _, new in pairs if new is not None]
        check(now, subnets)
        return self.database.change(before, now, guard=self.guard)

    def close(self) -> None:
        self.database.close()


def _row(interface: model.Interface, index: validate.SubnetIndex) -> Row:
    subnet = index.find(interface.ip)
    if subnet is None:  # validate keeps none such: a bug, refused rather than written
        raise Refused(f"interface {interface.id}: ip {interface.ip} is in no subnet")
    return row_of(interface, subnet.id)
