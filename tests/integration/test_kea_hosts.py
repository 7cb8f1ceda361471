"""Reservations written into Kea's PostgreSQL hosts database (``kea-admin db-init
pgsql`` on the test cluster): one checked transaction of row changes per pass, the
table reconciled on start, the previous rows kept when a write fails, and the logins
limited to what they need."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator import changes, kea_hosts, metrics, passes, read, render_options, syntax_check
from generator import settings as generator_settings
from tests.conftest import require
from tests.integration import generator_support as gs
from tests.integration import kea_hosts_support as khs
from tests.integration.inventory import seed

pytestmark = [pytest.mark.pg]


@pytest.fixture(scope="session")
def kea_template(pg_cluster: Any) -> str:
    require(khs.have_kea_admin(), "kea-admin (apt-get install kea-admin)")
    return khs.init_template(pg_cluster.url(), "127.0.0.1", pg_cluster.port)


@pytest.fixture
def new_kea_db(pg_cluster: Any, kea_template: str) -> Iterator[Callable[..., str]]:
    yield from khs.databases(pg_cluster.url())


@dataclasses.dataclass(frozen=True)
class KeaDb:
    name: str
    writer: str  # the generator's URL
    reader: str  # Kea's URL
    admin: str


@pytest.fixture
def kea_db(pg_cluster: Any, new_kea_db: Callable[..., str]) -> KeaDb:
    name = new_kea_db()
    cluster = pg_cluster.url()
    return KeaDb(
        name=name,
        writer=khs.url(cluster, name, khs.WRITER),
        reader=khs.url(cluster, name, khs.READER),
        admin=khs.url(cluster, name, "postgres"),
    )


def apply_settings(kea: KeaDb, out: Path, **overrides: Any) -> generator_settings.ApplySettings:
    reader = kea_hosts.reader_of(kea.reader)
    options = render_options.RenderOptions(
        kea_hosts_database=reader,
        control_socket=str(out.parent / "ctrl"),
        lease_file=str(out.parent / "leases.csv"),
    )
    values: dict[str, Any] = {
        "fmt": "kea",
        "output": out,
        "kea_hosts_database": kea.writer,
        "options": options,
        "syntax_check": syntax_check.find_binary("kea-dhcp4") is not None,
        **overrides,
    }
    return generator_settings.ApplySettings(**values)


@pytest.fixture
def pipeline_for(
    db_url: str, kea_db: KeaDb, tmp_path: Path
) -> Iterator[Callable[..., passes.Pipeline]]:
    engine = read.make_engine(db_url)
    made: list[passes.Pipeline] = []

    def make(**overrides: Any) -> passes.Pipeline:
        config = apply_settings(kea_db, tmp_path / "kea.json", **overrides)
        pipeline = passes.Pipeline(engine, config=config, metrics=metrics.Metrics())
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        if pipeline.kea_hosts is not None:
            pipeline.kea_hosts.close()
    engine.dispose()


# -- start-up checks and privileges ------------------------------------------------------


def test_schema_is_checked_at_start_with_a_one_line_error(
    db_url: str, db: psycopg.Connection[Any], kea_db: KeaDb, new_kea_db: Callable[..., str],
    pg_cluster: Any, tmp_path: Path,
) -> None:  # fmt: skip
    seed(db)
    empty = khs.url(pg_cluster.url(), new_kea_db(None), "postgres")
    flags = ["--once", "--format", "kea", "--database-url", db_url, "--no-syntax-check"]
    flags += ["--output", str(tmp_path / "kea.json")]
    done = gs.run_generator(*flags, "--kea-hosts-database", empty)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"dhcp-generator: Kea hosts database {empty.rsplit('/', 1)[1]} has no Kea schema"
        " (no schema_version table): create it with kea-admin db-init pgsql"
    ]
    assert not (tmp_path / "kea.json").exists()

    with psycopg.connect(kea_db.admin, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 12, minor = 0")
    done = gs.run_generator(*flags, "--kea-hosts-database", kea_db.writer)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "has schema version 12.0; Kea 2.2 needs 13.x" in done.stderr


def test_a_login_that_may_not_write_hosts_is_refused_at_start(kea_db: KeaDb) -> None:
    database = kea_hosts.Database(url=kea_db.reader)
    with pytest.raises(kea_hosts.SchemaMismatch, match="may not write the hosts table"):
        database.check()
    database.close()
    writer = kea_hosts.Database(url=kea_db.writer)
    assert writer.check() == "13.0"
    writer.close()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO dhcp4_options (code, scope_id) VALUES (3, 0)",
        "DELETE FROM schema_version",
        "UPDATE host_identifier_type SET name = 'x'",
        "INSERT INTO lease4 (address, valid_lifetime, expire, subnet_id, fqdn_fwd, fqdn_rev,"
        " state) VALUES (1, 1, now(), 1, false, false, 0)",
        "CREATE TABLE mine (id int)",
    ],
)
def test_the_generator_login_changes_hosts_only(kea_db: KeaDb, statement: str) -> None:
    with (
        psycopg.connect(kea_db.writer, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_kea_login_only_reads(kea_db: KeaDb) -> None:
    with psycopg.connect(kea_db.reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM hosts").fetchone() == (0,)
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (13,)
        for statement in (
            "INSERT INTO hosts (dhcp_identifier, dhcp_identifier_type) VALUES ('\\x02', 0)",
            "DELETE FROM hosts",
            "UPDATE hosts SET hostname = 'x'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


# -- writing ---------------------------------------------------------------------------------


def test_once_writes_the_rows_and_a_file_without_reservations_or_password(
    db_url: str, db: psycopg.Connection[Any], kea_db: KeaDb, tmp_path: Path
) -> None:
    seed(db)
    out = tmp_path / "kea.json"
    flags = ["--once", "--format", "kea", "--database-url", db_url, "--output", str(out)]
    flags += ["--kea-lease-file", str(tmp_path / "leases.csv")]
    done = gs.run_generator(
        *flags,
        "--kea-hosts-reader",
        kea_db.reader,
        env={"KEA_HOSTS_DATABASE_URL": kea_db.writer.replace("@", ":s3cret-not-used@", 1)},
    )
    assert done.returncode == 0, done.stderr
    assert khs.table_rows(kea_db.writer) == khs.rendered_rows(db_url)
    assert len(khs.table_rows(kea_db.writer)) == 3
    text = out.read_text()
    config = json.loads(text)["Dhcp4"]
    assert "s3cret" not in text and "password" not in text
    assert config["hosts-database"]["user"] == khs.READER
    assert config["hosts-database"]["readonly"] is True
    assert config["host-reservation-identifiers"] == ["hw-address"]
    assert all("reservations" not in subnet for subnet in config["subnet4"])
    assert "s3cret" not in done.stderr


def test_changes_are_row_differences_and_the_file_stays(
    db: psycopg.Connection[Any], db_url: str, kea_db: KeaDb, pipeline_for: Callable[..., passes.Pipeline],
    tmp_path: Path,
) -> None:  # fmt: skip
    seed(db)
    pipeline = pipeline_for()
    assert pipeline.full() is not None
    ids = _host_ids(kea_db)
    text = (tmp_path / "kea.json").read_text()

    db.execute("UPDATE interface SET ip = '10.20.0.77' WHERE id = 3")  # an IP change
    assert pipeline.incremental(changes.Plan(interface_ids={3})) is not None
    assert khs.table_rows(kea_db.writer) == khs.rendered_rows(db_url)
    assert _host_ids(kea_db) == ids  # updated in place, not deleted and re-added

    db.execute("DELETE FROM interface WHERE id = 2")
    db.execute(
        "INSERT INTO interface (id, host_id, name, mac, ip) VALUES"
        " (9, 2, 'eth1', '52:54:00:00:00:09', '10.21.0.99')"
    )
    assert pipeline.incremental(changes.Plan(interface_ids={2, 9})) is not None
    assert khs.table_rows(kea_db.writer) == khs.rendered_rows(db_url)
    assert (tmp_path / "kea.json").read_text() == text  # hosts only: the file is unchanged


def test_start_reconciles_the_table_after_a_crash(
    db: psycopg.Connection[Any], db_url: str, kea_db: KeaDb, pipeline_for: Callable[..., passes.Pipeline]
) -> None:  # fmt: skip
    seed(db)
    assert pipeline_for().full() is not None
    # Changes the crashed generator never wrote, and rows nobody should have written.
    db.execute("UPDATE interface SET ip = '10.20.0.78' WHERE id = 3")
    db.execute("UPDATE host SET enabled = false WHERE id = 1")
    with psycopg.connect(kea_db.admin, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO hosts (dhcp_identifier, dhcp_identifier_type, dhcp4_subnet_id,"
            " ipv4_address) VALUES ('\\x020000000042', 0, 1, 169083002),"
            " ('\\x7f', 1, 2, 169148426)"
        )
        conn.execute(
            "INSERT INTO hosts (dhcp_identifier, dhcp_identifier_type, dhcp6_subnet_id)"
            " VALUES ('\\x0001', 1, 5)"  # DHCPv6: not the generator's, left alone
        )
    restarted = pipeline_for()
    assert restarted.full() is not None
    assert khs.table_rows(kea_db.writer) == khs.rendered_rows(db_url)
    with psycopg.connect(kea_db.admin) as conn:
        assert conn.execute("SELECT count(*) FROM hosts WHERE dhcp6_subnet_id = 5").fetchone() == (
            1,
        )


def test_a_failed_transaction_leaves_the_previous_rows_and_is_retried(
    db: psycopg.Connection[Any], db_url: str, kea_db: KeaDb, pipeline_for: Callable[..., passes.Pipeline]
) -> None:  # fmt: skip
    seed(db)
    pipeline = pipeline_for()
    assert pipeline.full() is not None
    before = khs.table_rows(kea_db.writer)
    with psycopg.connect(kea_db.admin, autocommit=True) as conn:  # the insert fails, late
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'refused by test'; END$$;"
            " CREATE TRIGGER refuse BEFORE INSERT ON hosts FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    db.execute("DELETE FROM interface WHERE id = 1")  # a delete, then
    db.execute("UPDATE interface SET mac = '52:54:00:00:00:0a' WHERE id = 3")  # an insert
    assert pipeline.incremental(changes.Plan(interface_ids={1, 3})) is None
    assert khs.table_rows(kea_db.writer) == before  # the delete was rolled back too

    with psycopg.connect(kea_db.admin, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse ON hosts")
    assert pipeline.incremental(changes.Plan()) is not None  # the restored changes go now
    assert khs.table_rows(kea_db.writer) == khs.rendered_rows(db_url)


def test_the_wipe_guard_refuses_emptying_the_table(
    db: psycopg.Connection[Any], kea_db: KeaDb, pipeline_for: Callable[..., passes.Pipeline]
) -> None:
    seed(db)
    assert pipeline_for(removal_floor=1).full() is not None
    before = khs.table_rows(kea_db.writer)
    db.execute("DELETE FROM interface")
    pipeline = pipeline_for(removal_floor=1)
    assert pipeline.full() is None
    assert khs.table_rows(kea_db.writer) == before
    refused = pipeline.metrics.registry.get_sample_value(
        "dhcp_generator_renders_total", {"result": "refused"}
    )
    assert refused == 1
    assert pipeline_for(removal_floor=1, force=True).full() is not None
    assert khs.table_rows(kea_db.writer) == set()


def test_rows_that_fail_the_checks_are_not_written(
    db: psycopg.Connection[Any], kea_db: KeaDb, pipeline_for: Callable[..., passes.Pipeline]
) -> None:
    """A row the database would take but Kea must not see (here: the state hands over a
    reservation inside the pool, as a legacy row could): nothing is written."""
    seed(db)
    pipeline = pipeline_for()
    assert pipeline.full() is not None
    before = khs.table_rows(kea_db.writer)
    assert pipeline.state is not None and pipeline.kea_hosts is not None
    [row] = [r for r in pipeline.state.interfaces() if r.id == 3]
    bad = dataclasses.replace(row, ip=type(row.ip)("10.20.0.150"))  # in 10.20.0.100-200
    assert not pipeline.kea_hosts.put(
        pipeline.state, [(row, bad)], document=pipeline.document(), metrics=pipeline.metrics
    )
    assert khs.table_rows(kea_db.writer) == before


# -- the property: after any sequence of changes, the rows equal a fresh render -----------

MACS = [f"52:54:00:00:10:{n:02x}" for n in range(6)]
ADDRESSES = ["10.20.0.20", "10.20.0.21", "10.20.0.22", "10.21.0.20", "10.21.0.21", "10.22.0.5"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.sampled_from(MACS), st.sampled_from(ADDRESSES)),
        st.tuples(st.just("ip"), st.integers(1, 12), st.sampled_from(ADDRESSES)),
        st.tuples(st.just("mac"), st.integers(1, 12), st.sampled_from(MACS)),
        st.tuples(st.just("delete"), st.integers(1, 12), st.none()),
        st.tuples(st.just("disable"), st.integers(1, 2), st.booleans()),
        st.tuples(st.just("rename"), st.integers(1, 2), st.sampled_from(["web1", "db9", "x-1"])),
    ),
    max_size=8,
)


def _apply_operation(db: psycopg.Connection[Any], op: tuple[str, Any, Any]) -> None:
    kind, target, value = op
    statements = {
        "insert": (
            "INSERT INTO interface (host_id, name, mac, ip) SELECT 2, 'e' || nextval("
            "pg_get_serial_sequence('interface', 'id')), %s, %s",
            (target, value),
        ),
        "ip": ("UPDATE interface SET ip = %s WHERE id = %s", (value, target)),
        "mac": ("UPDATE interface SET mac = %s WHERE id = %s", (value, target)),
        "delete": ("DELETE FROM interface WHERE id = %s", (target,)),
        "disable": ("UPDATE host SET enabled = %s WHERE id = %s", (value, target)),
        "rename": ("UPDATE host SET hostname = %s WHERE id = %s", (value, target)),
    }
    sql, params = statements[kind]
    # A duplicate MAC or address: the database refuses it, as it would anyone's.
    with contextlib.suppress(psycopg.errors.IntegrityError):
        db.execute(sql, params)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(operations, min_size=1, max_size=4))
def test_rows_equal_a_fresh_render_after_any_changes(
    db: psycopg.Connection[Any], db_url: str, kea_db: KeaDb,
    pipeline_for: Callable[..., passes.Pipeline], batches: list[list[tuple[str, Any, Any]]],
) -> None:  # fmt: skip
    """Each example starts from the seed with a new pipeline, over whatever the table
    holds from the example before: the start reconciles it."""
    db.execute(
        "DELETE FROM interface; DELETE FROM host_service; DELETE FROM host;"
        " DELETE FROM subnet; DELETE FROM service; DELETE FROM hardware_type"
    )
    seed_once(db)
    pipeline = pipeline_for(syntax_check=False)
    assert pipeline.full() is not None
    assert khs.table_rows(kea_db.writer) == khs.rendered_rows(db_url)
    for batch in batches:
        interfaces, hosts = set(), set()
        for op in batch:
            _apply_operation(db, op)
            if op[0] in ("disable", "rename"):
                hosts.add(op[1])
            elif op[0] != "insert":
                interfaces.add(op[1])
        interfaces |= {row[0] for row in db.execute("SELECT id FROM interface").fetchall()}
        assert pipeline.incremental(changes.Plan(interface_ids=interfaces, host_ids=hosts))
        assert khs.table_rows(kea_db.writer) == khs.rendered_rows(db_url)


def seed_once(db: psycopg.Connection[Any]) -> None:
    """The seed, plus a third subnet."""
    seed(db)
    db.execute(
        "INSERT INTO subnet (id, name, network, pool_start, pool_end)"
        " VALUES (3, 'lab', '10.22.0.0/28', '10.22.0.8', '10.22.0.12')"
    )


def _host_ids(kea: KeaDb) -> set[int]:
    with psycopg.connect(kea.admin) as conn:
        return {row[0] for row in conn.execute("SELECT host_id FROM hosts")}


def test_dry_run_of_the_move_from_inline_reservations_is_not_refused(
    db_url: str, db: psycopg.Connection[Any], kea_db: KeaDb, tmp_path: Path
) -> None:
    """Moving a Kea setup over: the new file drops every inline reservation, which the
    file's wipe guard must not count (the rows carry them)."""
    seed(db)
    out = tmp_path / "kea.json"
    flags = ["--format", "kea", "--database-url", db_url, "--output", str(out)]
    flags += ["--no-syntax-check", "--removal-floor", "0"]
    assert gs.run_generator("--once", *flags).returncode == 0  # inline reservations
    assert '"reservations": [' in out.read_text()
    done = gs.run_generator("--dry-run", *flags, "--kea-hosts-database", kea_db.writer)
    assert done.returncode == 0, done.stderr
    assert '+    "hosts-database": {' in done.stdout
    assert "a real run would write" in done.stderr
    assert khs.table_rows(kea_db.writer) == set()  # a dry run writes no row


def test_boot_options_are_row_columns_and_a_change_is_an_update(
    db: psycopg.Connection[Any], kea_db: KeaDb, pipeline_for: Callable[..., passes.Pipeline]
) -> None:
    """A host's PXE options go into Kea's dhcp4_next_server / dhcp4_boot_file_name
    columns (served with no reload), and changing them updates the row in place."""
    seed(db)
    db.execute("UPDATE host SET next_server = '10.20.0.5', boot_file = 'pxelinux.0' WHERE id = 2")
    pipeline = pipeline_for()
    assert pipeline.full() is not None
    ids = _host_ids(kea_db)

    def boot_of_db1() -> tuple[Any, ...]:
        with psycopg.connect(kea_db.writer) as kea:
            row = kea.execute(
                "SELECT dhcp4_next_server, dhcp4_boot_file_name FROM hosts"
                " WHERE dhcp_identifier = decode('525400000002', 'hex')"
            ).fetchone()
        assert row is not None
        return tuple(row)

    assert boot_of_db1() == (int(ipaddress.IPv4Address("10.20.0.5")), "pxelinux.0")
    db.execute("UPDATE host SET boot_file = 'uefi/grubx64.efi' WHERE id = 2")
    assert pipeline.incremental(changes.Plan(host_ids={2})) is not None
    assert boot_of_db1() == (int(ipaddress.IPv4Address("10.20.0.5")), "uefi/grubx64.efi")
    assert _host_ids(kea_db) == ids  # updated in place
