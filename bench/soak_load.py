"""The soak's write load: writer threads doing a mix of inventory changes through plain
psycopg, a housekeeper that bulk-imports and trims, and probes whose arrival in
dhcpd.conf a watcher times.

Every writer survives PostgreSQL restarts: a transaction cut off by one is simply not
committed, and the writer reconnects and carries on. A change the database refuses by
one of its rules is counted, not retried.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

logger = logging.getLogger("soak.load")

Conn = psycopg.Connection[tuple[Any, ...]]

CONNECT_TIMEOUT = 3  # seconds
RECONNECT_PAUSE = 0.3  # seconds between attempts while PostgreSQL is down
# foreign key, unique, check, exclusion: a rule of the database said no
RULE_ERRORS = frozenset({"23503", "23505", "23514", "23P01"})
CONFLICT_ERRORS = frozenset({"40P01", "40001"})  # deadlock, serialization
WATCH_EVERY = 0.02  # seconds between looks at dhcpd.conf
TRIM_CHUNK = 10  # hosts deleted per trim
TRIM_EVERY = 1.0  # seconds: trims remove at most TRIM_CHUNK hosts a second
HIGH_WATER = 500  # hosts above the initial inventory: trim above, bulk-import below
NOT_PROBE = "hostname NOT LIKE 'probe-%%'"

# The writer subnets by second octet: 10.60/16, 10.61/16, 10.63/16 (soak_env.SUBNETS_SQL);
# the last one is outside the generator's scope.
WRITER_NETS = {60: "soak-a", 61: "soak-b", 63: "soak-c"}
SINGLE_OCTETS = range(1, 128)
BULK_OCTETS = range(128, 248)
POOL_OCTETS = range(248, 256)


class Stats:
    """Thread-safe counters, plus the first few unexpected errors verbatim."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.unexpected: list[str] = []

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def note_unexpected(self, text: str) -> None:
        with self._lock:
            self._counts["unexpected errors"] += 1
            if len(self.unexpected) < 20:
                self.unexpected.append(text)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


_serials = itertools.count(1)  # next() is atomic under the GIL: unique across threads


def serial() -> int:
    return next(_serials)


def mac_for(number: int) -> str:
    """A unique locally administered unicast MAC for ``number``."""
    return ":".join(f"{b:02x}" for b in (0x02, *number.to_bytes(5, "big")))


def single_ip(rng: random.Random) -> str:
    net = rng.choice(list(WRITER_NETS))
    return f"10.{net}.{rng.choice(SINGLE_OCTETS)}.{rng.randrange(256)}"


def bulk_ips(rng: random.Random, count: int, used: set[str]) -> list[str]:
    """``count`` free addresses of the bulk zone (only one bulk import runs at a time)."""
    zone = [f"10.{n}.{o}.{h}" for n in WRITER_NETS for o in BULK_OCTETS for h in range(256)]
    return rng.sample([ip for ip in zone if ip not in used], count)


def pick(table: str, extra: str = "") -> str:
    """SQL for a random row id of ``table`` (the fraction is parameter ``r``)."""
    return (
        f"(SELECT id FROM {table} WHERE id >= (SELECT max(id) FROM {table}) * %(r)s"
        f" {extra} ORDER BY id LIMIT 1)"
    )


PICK_HOST = pick("host", f"AND {NOT_PROBE}")
PICK_INTERFACE = pick(
    "interface", f"AND host_id IN (SELECT id FROM host WHERE {NOT_PROBE}) AND ip IS NOT NULL"
)


# ---- the operations: each one transaction ----------------------------------------------


def insert_host(conn: Conn, rng: random.Random) -> None:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO host (hostname) VALUES (%s) RETURNING id", [f"n{serial()}"]
        ).fetchone()
        assert row is not None
        ip = None if rng.random() < 0.05 else single_ip(rng)
        conn.execute(
            "INSERT INTO interface (host_id, name, mac, ip) VALUES (%s, 'eth0', %s, %s)",
            [row[0], mac_for(serial()), ip],
        )
        if rng.random() < 0.2:
            conn.execute(
                "INSERT INTO interface (host_id, name, mac, ip) VALUES (%s, 'ipmi', %s, %s)",
                [row[0], mac_for(serial()), single_ip(rng)],
            )


def delete_host(conn: Conn, rng: random.Random) -> None:
    with conn.transaction():
        conn.execute(f"DELETE FROM host WHERE id = {PICK_HOST}", {"r": rng.random()})


def update_ip(conn: Conn, rng: random.Random) -> None:
    with conn.transaction():
        conn.execute(
            f"UPDATE interface SET ip = %(ip)s WHERE id = {PICK_INTERFACE}",
            {"ip": single_ip(rng), "r": rng.random()},
        )


def update_mac(conn: Conn, rng: random.Random) -> None:
    with conn.transaction():
        conn.execute(
            f"UPDATE interface SET mac = %(mac)s WHERE id = {PICK_INTERFACE}",
            {"mac": mac_for(serial()), "r": rng.random()},
        )


def rename_host(conn: Conn, rng: random.Random) -> None:
    with conn.transaction():
        conn.execute(
            f"UPDATE host SET hostname = %(name)s WHERE id = {PICK_HOST}",
            {"name": f"m{serial()}", "r": rng.random()},
        )


def disable_host(conn: Conn, rng: random.Random) -> None:
    with conn.transaction():
        conn.execute(f"UPDATE host SET enabled = false WHERE id = {PICK_HOST}", {"r": rng.random()})


def enable_host(conn: Conn, rng: random.Random) -> None:
    """Re-enable a disabled host, so disabled ones stay few."""
    with conn.transaction():
        conn.execute(
            "UPDATE host SET enabled = true WHERE id ="
            " (SELECT id FROM host WHERE NOT enabled ORDER BY id LIMIT 1 OFFSET %s)",
            [rng.randrange(3)],
        )


def change_subnet(conn: Conn, rng: random.Random) -> None:
    """A change that keeps the subnet valid: DNS, lease time, domain, or a pool move."""
    net = rng.choice(list(WRITER_NETS))
    what = rng.choice(("dns", "lease", "domain", "pool"))
    params: dict[str, object] = {"name": WRITER_NETS[net]}
    if what == "dns":
        count = rng.randint(1, 3)
        sql = "dns_servers = %(dns)s::inet[]"
        params["dns"] = [f"10.53.{rng.randrange(4)}.{rng.randint(1, 254)}" for _ in range(count)]
    elif what == "lease":
        sql = "lease_time = %(lease)s"
        params["lease"] = rng.choice((600, 1800, 3600, 7200, 86400))
    elif what == "domain":
        sql = "domain_name = %(domain)s"
        params["domain"] = (
            f"{rng.choice(('lab', 'dc', 'edge', 'office'))}{rng.randint(1, 99)}.example.org"
        )
    else:
        octet, first = rng.choice(POOL_OCTETS), rng.randint(1, 100)
        sql = "pool_start = %(start)s, pool_end = %(end)s"
        params["start"] = f"10.{net}.{octet}.{first}"
        params["end"] = f"10.{net}.{octet}.{first + rng.randint(10, 150)}"
    with conn.transaction():
        conn.execute(f"UPDATE subnet SET {sql} WHERE name = %(name)s", params)


def change_services(conn: Conn, rng: random.Random) -> None:
    """Rows no DHCP config depends on: the generator acknowledges them without a render."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO service (name) VALUES (%s) RETURNING id", [f"svc{serial()}"]
        ).fetchone()
        assert row is not None
        conn.execute(
            f"INSERT INTO host_service (host_id, service_id) SELECT {PICK_HOST}, %(s)s"
            " WHERE EXISTS (SELECT 1 FROM host) ON CONFLICT DO NOTHING",
            {"r": rng.random(), "s": row[0]},
        )
        conn.execute(
            "DELETE FROM service WHERE name LIKE 'svc%' AND id < (SELECT max(id) - 20 FROM service)"
        )


Operation = Callable[[Conn, random.Random], None]
OPERATIONS: tuple[tuple[str, int, Operation], ...] = (
    ("insert host", 22, insert_host),
    ("delete host", 20, delete_host),
    ("update ip", 14, update_ip),
    ("update mac", 8, update_mac),
    ("rename host", 12, rename_host),
    ("disable host", 3, disable_host),
    ("enable host", 3, enable_host),
    ("change subnet", 4, change_subnet),
    ("change services", 3, change_services),
)


def link_hosts(conn: Conn, addresses: Sequence[str]) -> None:
    """One host per address of the link network dhcpd serves on, in one transaction."""
    with conn.transaction():
        for ip in addresses:
            row = conn.execute(
                "INSERT INTO host (hostname) VALUES (%s) RETURNING id", [f"l{serial()}"]
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO interface (host_id, name, mac, ip) VALUES (%s, 'eth0', %s, %s)",
                [row[0], mac_for(serial()), ip],
            )


def last_serial() -> int:
    """The highest number ``serial()`` handed out so far (every MAC the soak ever used
    is ``mac_for`` of a number up to it)."""
    return next(_serials) - 1


def bulk_import(conn: Conn, rng: random.Random, count: int, *, prefix: str) -> None:
    """``count`` hosts with an interface each (every fourth with a second), one transaction."""
    with conn.transaction():
        in_use = conn.execute("SELECT host(ip) FROM interface WHERE ip IS NOT NULL")
        used = {str(r[0]) for r in in_use}
        names = [f"{prefix}{serial()}" for _ in range(count)]
        ids: dict[str, int] = dict(
            conn.execute(
                "INSERT INTO host (hostname, hardware_type_id)"
                " SELECT n, (SELECT id FROM hardware_type WHERE name = 'soak')"
                " FROM unnest(%s::text[]) AS n RETURNING hostname, id",
                [names],
            ).fetchall()
        )
        extra = names[::4]
        ips = iter(bulk_ips(rng, count + len(extra), used))
        rows = [(ids[n], "eth0", mac_for(serial()), next(ips)) for n in names]
        rows += [(ids[n], "ipmi", mac_for(serial()), next(ips)) for n in extra]
        conn.execute(
            "INSERT INTO interface (host_id, name, mac, ip)"
            " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::macaddr[], %s::inet[])",
            [list(column) for column in zip(*rows, strict=True)],
        )


class Housekeeper:
    """Keeps the inventory bounded: bulk imports now and then, trims in small steps.

    Trims are slow on purpose (``TRIM_CHUNK`` hosts a second): the generator refuses a
    render that removes more than half of the reservations at once, and a generator
    that waits out a fault must not come back to a half-emptied database.
    """

    def __init__(
        self, *, base_hosts: int, bulk_size: int, first_bulk: float, bulk_every: float, stats: Stats
    ) -> None:
        self.high_water = base_hosts + HIGH_WATER
        self.bulk_size = bulk_size
        self.bulk_every = bulk_every
        self.stats = stats
        self._lock = threading.Lock()
        self._next_look = 0.0
        self._next_bulk = time.monotonic() + first_bulk

    def maybe_run(self, conn: Conn, rng: random.Random) -> bool:
        """Do one housekeeping step if one is due and nobody else is at it."""
        now = time.monotonic()
        if now < self._next_look or not self._lock.acquire(blocking=False):
            return False
        try:
            self._next_look = now + TRIM_EVERY
            hosts = conn.execute("SELECT count(*) FROM host").fetchone()
            assert hosts is not None
            if hosts[0] > self.high_water:
                with conn.transaction():
                    conn.execute(
                        f"DELETE FROM host WHERE id IN (SELECT id FROM host WHERE {NOT_PROBE}"
                        " ORDER BY id LIMIT %s)",
                        [TRIM_CHUNK],
                    )
                self.stats.add("committed trim")
                return True
            if now >= self._next_bulk:
                started = time.monotonic()
                bulk_import(conn, rng, self.bulk_size, prefix="b")
                self._next_bulk = time.monotonic() + self.bulk_every
                self.stats.add("committed bulk import")
                logger.info(
                    "bulk import of %d hosts committed in %.1f s",
                    self.bulk_size,
                    time.monotonic() - started,
                )
                return True
            return False
        finally:
            self._lock.release()


def connect(db_url: str) -> Conn | None:
    try:
        return psycopg.connect(db_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error:
        return None


def connection_lost(conn: Conn, exc: psycopg.Error) -> bool:
    """True when ``exc`` means the connection is gone (PostgreSQL stopped or restarting)."""
    state = exc.sqlstate
    return conn.closed or conn.broken or state is None or state[:2] in ("08", "57")


def classify_error(stats: Stats, conn: Conn, exc: psycopg.Error, what: str) -> bool:
    """Count ``exc``; return True when the connection must be replaced."""
    if connection_lost(conn, exc):
        stats.add("interrupted by a restart")
        return True
    if exc.sqlstate in RULE_ERRORS:
        stats.add(f"refused by a rule ({exc.sqlstate})")
    elif exc.sqlstate in CONFLICT_ERRORS:
        stats.add(f"conflict ({exc.sqlstate})")
    else:
        stats.note_unexpected(f"{what}: {exc.sqlstate} {str(exc).splitlines()[0]}")
    return False


@dataclass(kw_only=True)
class LoadConfig:
    db_url: str
    seed: int
    writers: int
    think: float  # seconds each writer pauses between transactions
    base_hosts: int
    bulk_size: int
    first_bulk: float  # seconds after the start
    bulk_every: float  # seconds
    probe_every: float  # seconds, on average


class Writer(threading.Thread):
    def __init__(
        self,
        index: int,
        config: LoadConfig,
        keeper: Housekeeper,
        stats: Stats,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"writer-{index}", daemon=True)
        self.rng = random.Random(f"{config.seed}-writer-{index}")
        self.config = config
        self.keeper = keeper
        self.stats = stats
        self.stop = stop
        self.names = [name for name, _, _ in OPERATIONS]
        self.weights = [weight for _, weight, _ in OPERATIONS]
        self.functions = {name: fn for name, _, fn in OPERATIONS}

    def run(self) -> None:
        conn: Conn | None = None
        try:
            while not self.stop.is_set():
                if conn is None:
                    conn = connect(self.config.db_url)
                    if conn is None:
                        self.stop.wait(RECONNECT_PAUSE)
                        continue
                if not self._step(conn):
                    conn.close()
                    conn = None
                    self.stats.add("reconnects")
                self.stop.wait(self.config.think)
        finally:
            if conn is not None:
                conn.close()

    def _step(self, conn: Conn) -> bool:
        """One transaction; False when the connection has to be replaced."""
        name = "housekeeping"
        try:
            if self.keeper.maybe_run(conn, self.rng):
                return True
            name = self.rng.choices(self.names, self.weights)[0]
            self.functions[name](conn, self.rng)
            self.stats.add(f"committed {name}")
        except psycopg.Error as exc:
            return not classify_error(self.stats, conn, exc, name)
        except Exception as exc:  # a bug of the soak itself: report it, keep writing
            self.stats.note_unexpected(f"{name}: {type(exc).__name__}: {exc}")
        return True


@dataclass
class Probe:
    name: str
    committed: float  # monotonic, just before COMMIT
    seen: float | None = None  # monotonic, when dhcpd.conf first had it

    @property
    def wait(self) -> float:
        assert self.seen is not None, "only seen probes have waited"
        return self.seen - self.committed


@dataclass
class ProbeBook:
    """Probes committed and when each first showed up in dhcpd.conf."""

    probes: dict[str, Probe] = field(default_factory=dict)
    unsure: int = 0  # commits cut off by a restart that turned out to have gone through
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_text: str = ""

    def add(self, probe: Probe) -> None:
        with self.lock:
            self.probes[probe.name] = probe
            self._mark(self.last_text, time.monotonic())

    def saw(self, text: str, at: float) -> None:
        with self.lock:
            self.last_text = text
            self._mark(text, at)

    def _mark(self, text: str, at: float) -> None:
        for probe in self.probes.values():
            if probe.seen is None and f'"{probe.name}"' in text:
                probe.seen = at

    def seen_names(self) -> list[str]:
        with self.lock:
            return [p.name for p in self.probes.values() if p.seen is not None]

    def seen(self, *, avoiding: Sequence[tuple[float, float]] = ()) -> list[Probe]:
        """The probes seen; with ``avoiding`` (monotonic intervals), only those whose
        wait overlapped none of them."""
        with self.lock:
            return [
                p
                for p in self.probes.values()
                if p.seen is not None
                and not any(p.committed <= end and start <= p.seen for start, end in avoiding)
            ]

    def waits(self, *, avoiding: Sequence[tuple[float, float]] = ()) -> list[float]:
        return [p.wait for p in self.seen(avoiding=avoiding)]

    def never_seen(self) -> list[str]:
        with self.lock:
            return [p.name for p in self.probes.values() if p.seen is None]


class Prober(threading.Thread):
    """Commits a new host now and then (alone in its transaction), and deletes the probe
    hosts the watcher has already seen."""

    def __init__(
        self, config: LoadConfig, book: ProbeBook, stats: Stats, stop: threading.Event
    ) -> None:
        super().__init__(name="prober", daemon=True)
        self.config = config
        self.book = book
        self.stats = stats
        self.stop = stop
        self.rng = random.Random(f"{config.seed}-prober")
        self.number = 0
        self.deleted: set[str] = set()
        self.in_doubt: list[Probe] = []  # COMMIT was cut off: did it go through?

    def run(self) -> None:
        conn: Conn | None = None
        try:
            while not self.stop.wait(self.config.probe_every * self.rng.uniform(0.5, 1.5)):
                if conn is None:
                    conn = connect(self.config.db_url)
                    if conn is None:
                        continue
                    self._settle_doubts(conn)
                if not self._probe_once(conn):
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _probe_once(self, conn: Conn) -> bool:
        probe: Probe | None = None
        try:
            self._delete_seen(conn)
            self.number += 1
            name = f"probe-{self.number}"
            ip = f"10.62.{self.number // 250 % 254 + 1}.{self.number % 250 + 1}"
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO host (hostname) VALUES (%s) RETURNING id", [name]
                ).fetchone()
                assert row is not None
                conn.execute(
                    "INSERT INTO interface (host_id, mac, ip) VALUES (%s, %s, %s)",
                    [row[0], mac_for(serial()), ip],
                )
                probe = Probe(name, time.monotonic())
            self.book.add(probe)
            self.stats.add("committed probe")
        except psycopg.Error as exc:
            if probe is not None:
                self.in_doubt.append(probe)
            return not classify_error(self.stats, conn, exc, "probe")
        return True

    def _delete_seen(self, conn: Conn) -> None:
        done = [n for n in self.book.seen_names() if n not in self.deleted]
        if done:
            conn.execute("DELETE FROM host WHERE hostname = ANY(%s)", [done])
            self.deleted.update(done)

    def _settle_doubts(self, conn: Conn) -> None:
        with contextlib.suppress(psycopg.Error):
            for probe in self.in_doubt:
                found = conn.execute(
                    "SELECT 1 FROM host WHERE hostname = %s", [probe.name]
                ).fetchone()
                if found is not None:
                    self.book.unsure += 1
                    self.book.add(probe)
            self.in_doubt = []


class FileWatcher(threading.Thread):
    """Looks at dhcpd.conf every ``WATCH_EVERY`` seconds and reads it when it changed."""

    def __init__(self, path: Path, book: ProbeBook, stop: threading.Event) -> None:
        super().__init__(name="file-watcher", daemon=True)
        self.path = path
        self.book = book
        self.stop = stop
        self.versions = 0  # distinct files seen in place
        self.last_change = time.monotonic()

    def run(self) -> None:
        last: tuple[int, int, int] | None = None
        while not self.stop.wait(WATCH_EVERY):
            try:
                st = self.path.stat()
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                if key == last:
                    continue
                text = self.path.read_text()
            except FileNotFoundError:
                continue
            now = time.monotonic()
            last = key
            self.versions += 1
            self.last_change = now
            self.book.saw(text, now)
