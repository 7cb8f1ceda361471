"""The snapshot reader streams its rows: all of them, whatever the chunking, and a
connection lost in the middle is a ``DatabaseUnavailable`` the next read recovers from."""

from __future__ import annotations

import ipaddress
from typing import Any

import psycopg
import pytest

from generator import memo, model, read

pytestmark = pytest.mark.pg

HOSTS = 1234  # not a multiple of the chunk size used below

# psycopg sends a statement with parameters alone: the count is spliced in as text.

LOAD = """
INSERT INTO subnet (id, name, network, pool_start, pool_end)
VALUES (1, 'big', '10.30.0.0/16', '10.30.255.1', '10.30.255.99');
INSERT INTO host (id, hostname) SELECT i, 'node' || i FROM generate_series(1, :n) AS i;
INSERT INTO interface (id, host_id, mac, ip)
SELECT i, i, ('02:00:00:00:' || lpad(to_hex(i >> 8), 2, '0') || ':'
              || lpad(to_hex(i & 255), 2, '0'))::macaddr,
       ('10.30.' || (i / 200) || '.' || (10 + i % 200))::inet
FROM generate_series(1, :n) AS i;
"""


@pytest.fixture
def loaded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    db.execute(LOAD.replace(":n", str(HOSTS)).encode())
    return db


def expected(db: psycopg.Connection[Any]) -> set[tuple[int, str, str, str]]:
    rows = db.execute(
        "SELECT i.id, h.hostname, i.mac::text, host(i.ip)"
        " FROM interface i JOIN host h ON h.id = i.host_id"
    ).fetchall()
    return {(r[0], r[1], r[2], r[3]) for r in rows}


def seen(inventory: model.Inventory) -> set[tuple[int, str, str, str]]:
    return {(i.id, i.hostname, i.mac, str(i.ip)) for i in inventory.interfaces}


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "client-side cursor"])
def test_every_row_arrives_across_chunks(
    db_url: str, loaded: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    monkeypatch.setattr(read, "BATCH_ROWS", 100)  # 13 chunks, the last one short
    if not chunked:  # as with a libpq older than 17
        monkeypatch.setattr(psycopg.capabilities, "has_stream_chunked", lambda *a, **k: False)
    engine = read.make_engine(db_url)
    try:
        inventory = read.read_inventory(engine)
    finally:
        engine.dispose()
    assert len(inventory.interfaces) == HOSTS
    assert seen(inventory) == expected(loaded)
    assert all(isinstance(i.ip, ipaddress.IPv4Address) for i in inventory.interfaces)


def test_memo_gives_unchanged_rows_back_as_the_same_objects(
    db_url: str, loaded: psycopg.Connection[Any]
) -> None:
    engine = read.make_engine(db_url)
    rows: read.RowMemo = memo.ByValue()
    try:
        first = read.read_snapshot(engine, rows=rows).inventory
        rows.end_pass()
        loaded.execute("UPDATE interface SET ip = '10.30.250.1' WHERE id = 7")
        second = read.read_snapshot(engine, rows=rows).inventory
    finally:
        engine.dispose()
    before = {i.id: i for i in first.interfaces}
    after = {i.id: i for i in second.interfaces}
    assert after.keys() == before.keys()
    assert str(after[7].ip) == "10.30.250.1" and after[7] is not before[7]
    assert all(after[k] is before[k] for k in after if k != 7)
    assert seen(second) == expected(loaded)


def test_connection_lost_mid_read_is_reported_and_the_next_read_recovers(
    db_url: str, loaded: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(read, "BATCH_ROWS", 100)
    make = read._interface_from_row
    calls = 0

    def kill_on_first_row(row: tuple[Any, ...]) -> model.Interface:
        nonlocal calls
        calls += 1
        if calls == 1:  # the server is still sending: 12 chunks are to come
            loaded.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'dhcp-generator'"
            )
        return make(row)

    engine = read.make_engine(db_url)
    try:
        monkeypatch.setattr(read, "_interface_from_row", kill_on_first_row)
        with pytest.raises(read.DatabaseUnavailable, match="cannot read the machine database"):
            read.read_inventory(engine)
        monkeypatch.setattr(read, "_interface_from_row", make)
        assert seen(read.read_inventory(engine)) == expected(loaded)
    finally:
        engine.dispose()
