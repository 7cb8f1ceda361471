"""The snapshot reader streams its rows: all of them, whatever the chunking, and a
connection lost in the middle is a ``DatabaseUnavailable`` the next read recovers from."""

from __future__ import annotations

import ipaddress
from typing import Any

import psycopg
import pytest

from generator import model, read

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


def test_named_rows_are_re_read_and_the_missing_ones_are_gone(
    db_url: str, loaded: psycopg.Connection[Any]
) -> None:
    loaded.execute("UPDATE interface SET ip = '10.30.250.1' WHERE id = 7")
    loaded.execute("UPDATE host SET enabled = false WHERE id = 8")
    loaded.execute("DELETE FROM interface WHERE id = 9")
    engine = read.make_engine(db_url)
    try:
        named = read.read_named(engine, interface_ids={7, 9, 10**9}, host_ids={8, 11})
    finally:
        engine.dispose()
    assert sorted((i.id, str(i.ip)) for i in named.wanted) == [
        (7, "10.30.250.1"),
        (11, "10.30.0.21"),
    ]
    # deleted, forged (never existed) and no longer wanted (host disabled)
    assert named.gone == {8, 9, 10**9}


SCOPES = """
INSERT INTO subnet (id, name, network) VALUES (2, 'other', '10.31.0.0/24'), (3, 'off', '10.32.0.0/24');
UPDATE subnet SET dhcp_enabled = false WHERE id = 3;
INSERT INTO host (id, hostname) VALUES (5001, 'o1'), (5002, 'o2');
INSERT INTO interface (id, host_id, mac, ip) VALUES
    (5001, 5001, '02:01:00:00:00:01', '10.31.0.10'), (5002, 5002, '02:01:00:00:00:02', '10.32.0.10');
INSERT INTO dhcp_server (id, name) VALUES (1, 'site-a'), (2, 'Site-B');
INSERT INTO dhcp_server_subnet VALUES (1, 1), (2, 2), (2, 3);
"""


def test_a_scope_reads_only_its_own_subnets_and_rows(
    db_url: str, loaded: psycopg.Connection[Any]
) -> None:
    loaded.execute(SCOPES)
    engine = read.make_engine(db_url)
    try:
        assert read.find_server(engine, "site-b") == 2  # names match whatever their case
        with pytest.raises(read.UnknownServer, match="'nope' is not in the dhcp_server table"):
            read.find_server(engine, "nope")
        a = read.read_inventory(engine, server=1)
        b = read.read_inventory(engine, server=2)
        everything = read.read_inventory(engine)
        named = read.read_named(engine, interface_ids={1, 5001}, subnet_ids={1, 2, 3}, server=2)
    finally:
        engine.dispose()
    assert [s.id for s in a.subnets] == [1]
    assert seen(a) == expected(loaded) - {r for r in expected(loaded) if r[0] > 5000}
    assert [s.id for s in b.subnets] == [2]  # a DHCP-off subnet is in no scope's file
    assert [i.id for i in b.interfaces] == [5001]
    assert len(everything.interfaces) == HOSTS + 1
    assert [i.id for i in named.wanted] == [5001]
    assert named.gone == {1}  # exists, but outside this scope
    assert named.subnets_in_scope == {2, 3}


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
