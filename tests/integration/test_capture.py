"""Each kind of write leaves exactly the expected outbox rows, in the same transaction,
and rings the doorbell at most once per transaction, only after commit."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT
from tests.integration.inventory import ALL_TABLES, seed

pytestmark = pytest.mark.pg

DBA_DOC = ROOT / "docs" / "dba.md"


def changes(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT table_name, op, pk, before, after, txid FROM cdc.change ORDER BY id"
    ).fetchall()


def row_image(conn: psycopg.Connection[Any], table: str, row_id: int) -> Any:
    found = conn.execute(f"SELECT to_jsonb(t) FROM {table} t WHERE id = %s", [row_id]).fetchone()
    assert found is not None
    return found[0]


def test_single_row_insert(db: psycopg.Connection[Any]) -> None:
    with db.transaction():
        db.execute(
            "INSERT INTO host (id, hostname, description) VALUES (7, 'web7', 'a \"quoted\" one')"
        )
        txid = db.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    assert txid is not None
    assert changes(db) == [("host", "INSERT", {"id": 7}, None, row_image(db, "host", 7), txid[0])]
    image = row_image(db, "host", 7)
    assert image["hostname"] == "web7"
    assert image["description"] == 'a "quoted" one'
    assert image["enabled"] is True


def test_multi_row_insert_gives_one_row_each_in_key_order(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO host (id, hostname) VALUES (3, 'c'), (1, 'a'), (2, 'b')")
    rows = changes(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("host", "INSERT", {"id": 1}),
        ("host", "INSERT", {"id": 2}),
        ("host", "INSERT", {"id": 3}),
    ]
    assert len({r[5] for r in rows}) == 1  # one transaction
    assert [r[3] for r in rows] == [None, None, None]  # no before image for an INSERT
    assert [r[4] for r in rows] == [
        {
            "id": i,
            "hostname": name,
            "hardware_type_id": None,
            "enabled": True,
            "description": None,
            # boot options (migration 0007)
            "next_server": None,
            "boot_file": None,
            "boot_file_bios": None,
            "boot_file_uefi_x64": None,
            "boot_file_uefi_arm64": None,
        }
        for i, name in ((1, "a"), (2, "b"), (3, "c"))
    ]
    assert [r[4] for r in rows] == [row_image(db, "host", i) for i in (1, 2, 3)]


def test_update_of_several_rows_has_before_and_after(db: psycopg.Connection[Any]) -> None:
    seed(db)
    before = {i: row_image(db, "interface", i) for i in (1, 2, 3)}
    db.execute("UPDATE interface SET name = name || '-x' WHERE host_id = 1")  # rows 1 and 2
    rows = changes(db)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("interface", "UPDATE", {"id": 1}),
        ("interface", "UPDATE", {"id": 2}),
    ]
    for _, _, pk, old, new, _ in rows:
        assert old == before[pk["id"]]
        assert new == row_image(db, "interface", pk["id"])
        assert new["name"] == old["name"] + "-x"


def test_update_that_changes_nothing_is_not_captured(db: psycopg.Connection[Any]) -> None:
    seed(db)
    db.execute("UPDATE host SET enabled = enabled")
    db.execute("UPDATE subnet SET dns_servers = dns_servers, network = network")
    assert changes(db) == []
    # a partly effective update captures only the rows that changed
    db.execute("UPDATE host SET description = 'front end'")  # host 1 has it already
    assert [(r[1], r[2]) for r in changes(db)] == [("UPDATE", {"id": 2})]


def test_delete_cascades_from_host_to_interfaces_and_services(db: psycopg.Connection[Any]) -> None:
    seed(db)
    images = {("interface", i): row_image(db, "interface", i) for i in (1, 2)}
    images[("host", 1)] = row_image(db, "host", 1)
    db.execute("DELETE FROM host WHERE id = 1")
    rows = changes(db)
    by_key = {(r[0], tuple(sorted(r[2].items()))): r for r in rows}
    assert set(by_key) == {
        ("host", (("id", 1),)),
        ("interface", (("id", 1),)),
        ("interface", (("id", 2),)),
        ("host_service", (("host_id", 1), ("service_id", 1))),
    }
    for (table, key), row in by_key.items():
        assert row[1] == "DELETE" and row[4] is None
        if table != "host_service":
            assert row[3] == images[(table, dict(key)["id"])]
    assert len({r[5] for r in rows}) == 1


def test_truncate_is_captured_per_table(db: psycopg.Connection[Any]) -> None:
    seed(db)
    db.execute("TRUNCATE host CASCADE")
    rows = changes(db)
    assert {(r[0], r[1], r[2], r[3], r[4]) for r in rows} == {
        ("host", "TRUNCATE", None, None, None),
        ("interface", "TRUNCATE", None, None, None),
        ("host_service", "TRUNCATE", None, None, None),
    }


def test_primary_key_change_shows_both_images(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO service (id, name) VALUES (2, 'dns')")
    db.execute("DELETE FROM cdc.change")
    db.execute("UPDATE service SET id = 9 WHERE id = 2")
    rows = changes(db)
    assert sorted((r[1], r[2]["id"], r[3] is None, r[4] is None) for r in rows) == [
        ("UPDATE", 2, False, True),
        ("UPDATE", 9, True, False),
    ]


def test_rolled_back_transaction_leaves_no_outbox_row(db: psycopg.Connection[Any]) -> None:
    seed(db)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), db.transaction():
        db.execute("INSERT INTO host (hostname) VALUES ('ghost')")
        db.execute("DELETE FROM interface")
        assert len(changes(db)) > 0  # visible inside the transaction
        raise Abort
    assert changes(db) == []


def notifications(listener: psycopg.Connection[Any], wait: float) -> list[str]:
    got = []
    for note in listener.notifies(timeout=wait, stop_after=None):
        got.append(note.channel)
    return got


def test_one_doorbell_per_transaction_and_only_after_commit(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener, psycopg.connect(db_url) as writer:
        listener.execute("LISTEN cdc_change")
        writer.execute("INSERT INTO host (hostname) VALUES ('n1')")
        writer.execute("INSERT INTO host (hostname) VALUES ('n2'), ('n3')")
        writer.execute("UPDATE host SET description = 'x'")
        assert notifications(listener, 0.3) == []  # not yet committed
        writer.commit()
        assert notifications(listener, 1.0) == ["cdc_change"]

        writer.execute("INSERT INTO host (hostname) VALUES ('n4')")
        writer.rollback()
        assert notifications(listener, 0.3) == []


def test_no_doorbell_while_the_relay_is_awake(db_url: str) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as listener,
        psycopg.connect(db_url, autocommit=True) as writer,
    ):
        listener.execute("LISTEN cdc_change")
        writer.execute("UPDATE cdc.doorbell SET armed = false")
        writer.execute("INSERT INTO host (hostname) VALUES ('quiet')")
        assert notifications(listener, 0.3) == []
        assert writer.execute("SELECT count(*) FROM cdc.change").fetchone() == (1,)
        writer.execute("UPDATE cdc.doorbell SET armed = true")
        writer.execute("INSERT INTO host (hostname) VALUES ('loud')")
        assert notifications(listener, 1.0) == ["cdc_change"]


# (trigger, tgtype, old transition table, new transition table): tgtype bits are
# ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32, INSTEAD 64, so each
# value below is one event, AFTER, FOR EACH STATEMENT
CAPTURE_TRIGGERS = {
    ("cdc_capture_insert", 4, None, "new_rows"),
    ("cdc_capture_update", 16, "old_rows", "new_rows"),
    ("cdc_capture_delete", 8, "old_rows", None),
    ("cdc_capture_truncate", 32, None, None),
}


def capture_triggers(conn: psycopg.Connection[Any], table: str) -> set[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT tgname, tgtype, tgoldtable, tgnewtable, tgfoid::regproc::text, tgenabled "
        "FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname LIKE 'cdc%%'",
        [table],
    ).fetchall()
    return set(rows)


def test_capture_triggers_are_statement_level_with_transition_tables(
    db: psycopg.Connection[Any],
) -> None:
    for table in ALL_TABLES:
        function = f"cdc.capture_v2_public_{table}"
        assert capture_triggers(db, f"public.{table}") == {
            (*trigger, function, "O") for trigger in CAPTURE_TRIGGERS
        }, table


def documented_sql(path: str) -> str:
    """The ```sql block of docs/dba.md that starts with the comment ``-- <path>``."""
    blocks = re.findall(r"```sql\n(.*?)```", DBA_DOC.read_text(), flags=re.DOTALL)
    found = [block for block in blocks if block.startswith(f"-- {path}\n")]
    assert len(found) == 1, f"docs/dba.md should show {path} once"
    return found[0]


def test_tracking_a_new_table_as_docs_dba_md_shows(db: psycopg.Connection[Any]) -> None:
    db.execute(documented_sql("migrations/sql/0005_rack.up.sql"))
    assert capture_triggers(db, "public.rack") == {
        (*trigger, "cdc.capture_v2_public_rack", "O") for trigger in CAPTURE_TRIGGERS
    }
    assert ("rack",) in db.execute("SELECT table_name::text FROM cdc.tracked_table").fetchall()

    db.execute("INSERT INTO rack (code, room) VALUES ('r2', 'a'), ('r1', 'a')")
    db.execute("UPDATE rack SET room = 'b' WHERE code = 'r1'")
    db.execute("UPDATE rack SET room = room")  # changes nothing: not captured
    db.execute("DELETE FROM rack WHERE code = 'r2'")
    with db.transaction():  # the application role, which has no rights on cdc
        db.execute("SET LOCAL ROLE machinedb_app")
        db.execute("INSERT INTO rack (code) VALUES ('r3')")
    db.execute("TRUNCATE rack")
    assert [r[:5] for r in changes(db)] == [
        ("rack", "INSERT", {"code": "r1"}, None, {"code": "r1", "room": "a"}),
        ("rack", "INSERT", {"code": "r2"}, None, {"code": "r2", "room": "a"}),
        (
            "rack",
            "UPDATE",
            {"code": "r1"},
            {"code": "r1", "room": "a"},
            {"code": "r1", "room": "b"},
        ),
        ("rack", "DELETE", {"code": "r2"}, {"code": "r2", "room": "a"}, None),
        ("rack", "INSERT", {"code": "r3"}, None, {"code": "r3", "room": None}),
        ("rack", "TRUNCATE", None, None, None),
    ]

    db.execute(documented_sql("migrations/sql/0005_rack.down.sql"))
    leftovers = db.execute(
        "SELECT to_regclass('public.rack'), to_regproc('cdc.capture_v2_public_rack')"
    ).fetchone()
    assert leftovers == (None, None)


def test_tracking_a_table_without_primary_key_fails_clearly(db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE TABLE loose (x int)")
    with pytest.raises(
        psycopg.errors.RaiseException, match=r"track_v2\(loose\): the table needs a primary key"
    ):
        db.execute("SELECT cdc.track_v2('public.loose')")
    assert capture_triggers(db, "public.loose") == set()
