"""The incremental pipeline equals a fresh full pass, on a real database, for every scope.

Hypothesis writes sequences of inserts, updates and deletes to every table a render
depends on (hosts, interfaces, subnets, DHCP servers and the subnets each serves); the
database's own rules refuse some of them, and a refused step is skipped. The triggers
capture each step into the outbox, and its rows become change messages exactly as the
relay encodes them. Each scope's ``passes.Pipeline`` (unscoped, and one per
``dhcp_server``) receives them duplicated, reordered, split over several passes, mixed
with forged messages (rows that do not exist, tables nothing reads, a truncate, an
unreadable body) and some dropped. After each step a pipeline that missed nothing
renders, byte for byte, what a fresh full pass renders; one that missed a message does
after a reconciling full pass, and a reconciling pass over one that missed nothing
finds no difference.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cdc import outbox
from generator import changes, consumer, passes, read, render
from generator import metrics as metrics_module
from generator import settings as generator_settings
from machinedb import change_message as contract

pytestmark = pytest.mark.pg

SEED = """
INSERT INTO subnet (id, name, network, gateway, pool_start, pool_end, lease_time) VALUES
    (1, 'a', '10.50.0.0/28', '10.50.0.1', '10.50.0.8', '10.50.0.11', 600),
    (2, 'b', '10.50.1.0/28', '10.50.1.1', NULL, NULL, NULL),
    (3, 'c', '10.50.2.0/28', NULL, NULL, NULL, 3600);
INSERT INTO host (id, hostname, enabled) VALUES (1, 'web1', true), (2, 'db1', true),
    (3, 'old', false);
INSERT INTO interface (id, host_id, name, mac, ip) VALUES
    (1, 1, 'eth0', '02:00:00:00:00:01', '10.50.0.2'),
    (2, 1, 'eth1', '02:00:00:00:00:02', '10.50.1.2'),
    (3, 2, 'eth0', '02:00:00:00:00:03', '10.50.2.2'),
    (4, 3, 'eth0', '02:00:00:00:00:04', '10.50.0.3');
INSERT INTO dhcp_server (id, name) VALUES (1, 's1'), (2, 's2');
INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id) VALUES (1, 1), (1, 2), (2, 2), (2, 3);
DELETE FROM cdc.change;
"""
SCOPES = (None, 1, 2)  # unscoped, and the two seeded servers (a step may delete them)

# Small pools of keys, so that steps hit existing rows, clash, and break rules.
HOST_IDS = st.integers(1, 4)
INTERFACE_IDS = st.integers(1, 7)
SUBNET_IDS = st.integers(1, 4)
SERVER_IDS = st.integers(1, 3)
HOSTNAMES = st.sampled_from(["web1", "db1", "WEB1", "app", "app.lab", "old"])
MACS = st.sampled_from([f"02:00:00:00:00:0{n}" for n in range(1, 7)])
# in subnets a-d, their network and broadcast addresses and pools, and nowhere
ADDRESSES = st.sampled_from(
    [
        None,
        *("10.50.0.2", "10.50.0.3", "10.50.0.4", "10.50.0.9", "10.50.0.15"),
        *("10.50.1.2", "10.50.1.3", "10.50.2.2", "10.50.2.3", "10.50.3.2", "10.50.9.9"),
    ]
)
POOLS = st.sampled_from([(None, None), (8, 11), (3, 4), (12, 14)])  # host numbers

Write = tuple[str, tuple[Any, ...]]


def _write(sql: str, *params: st.SearchStrategy[Any]) -> st.SearchStrategy[Write]:
    return st.tuples(*params).map(lambda values: (sql, values))


WRITES = st.one_of(
    _write(
        "INSERT INTO host (id, hostname, enabled) VALUES (%s, %s, %s)",
        HOST_IDS,
        HOSTNAMES,
        st.booleans(),
    ),
    _write("UPDATE host SET enabled = NOT enabled WHERE id = %s", HOST_IDS),
    _write("UPDATE host SET hostname = %s WHERE id = %s", HOSTNAMES, HOST_IDS),
    _write("DELETE FROM host WHERE id = %s", HOST_IDS),
    _write(
        "INSERT INTO interface (id, host_id, name, mac, ip) VALUES (%s, %s, %s, %s, %s)",
        INTERFACE_IDS,
        HOST_IDS,
        st.sampled_from(["eth0", "eth1"]),
        MACS,
        ADDRESSES,
    ),
    _write("UPDATE interface SET ip = %s WHERE id = %s", ADDRESSES, INTERFACE_IDS),
    _write("UPDATE interface SET mac = %s WHERE id = %s", MACS, INTERFACE_IDS),
    _write("UPDATE interface SET host_id = %s WHERE id = %s", HOST_IDS, INTERFACE_IDS),
    _write("DELETE FROM interface WHERE id = %s", INTERFACE_IDS),
    _write(
        "UPDATE subnet SET lease_time = %s WHERE id = %s",
        st.sampled_from([None, 300, 7200]),
        SUBNET_IDS,
    ),
    _write(
        "UPDATE subnet SET pool_start = host(network)::inet + %s,"
        " pool_end = host(network)::inet + %s WHERE id = %s",
        POOLS.map(lambda pool: pool[0]),
        POOLS.map(lambda pool: pool[1]),
        SUBNET_IDS,
    ),
    _write("UPDATE subnet SET dhcp_enabled = NOT dhcp_enabled WHERE id = %s", SUBNET_IDS),
    _write(
        "INSERT INTO subnet (id, name, network, lease_time) VALUES (%s, 'new' || %s, %s, 900)",
        st.integers(4, 5),
        st.integers(4, 5),
        st.sampled_from(["10.50.3.0/28", "10.50.0.0/27"]),  # the second overlaps 'a'
    ),
    _write("DELETE FROM subnet WHERE id = %s", SUBNET_IDS),
    _write("INSERT INTO dhcp_server (id, name) VALUES (%s, 's' || %s)", SERVER_IDS, SERVER_IDS),
    _write("UPDATE dhcp_server SET name = 'renamed' || id WHERE id = %s", SERVER_IDS),
    _write("DELETE FROM dhcp_server WHERE id = %s", SERVER_IDS),
    _write(
        "INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id) VALUES (%s, %s)",
        SERVER_IDS,
        SUBNET_IDS,
    ),
    _write(
        "DELETE FROM dhcp_server_subnet WHERE dhcp_server_id = %s AND subnet_id = %s",
        SERVER_IDS,
        SUBNET_IDS,
    ),
    _write(
        "UPDATE dhcp_server_subnet SET dhcp_server_id = %s"
        " WHERE dhcp_server_id = %s AND subnet_id = %s",
        SERVER_IDS,
        SERVER_IDS,
        SUBNET_IDS,
    ),
    _write("INSERT INTO service (name) VALUES (%s)", st.uuids().map(str)),  # nobody reads it
)
# one transaction: all of its writes, or none when the database refuses one
STEPS = st.lists(st.lists(WRITES, min_size=1, max_size=2), min_size=3, max_size=12)


def _forged(table: str | None, op: str, pk: dict[str, Any] | None) -> tuple[dict[str, str], str]:
    headers = {"event-id": f"forged-{uuid.uuid4().hex[:8]}"}
    if table is not None:
        headers.update({"table": table, "op": op})
    body = {"table": table, "op": op, "pk": pk, "before": None, "after": None, "txid": 1}
    return headers, json.dumps(body)


# Forged messages that name rows: each costs a re-read and changes nothing.
FORGED = st.sampled_from(
    [
        _forged("interface", "UPDATE", {"id": 10**6}),  # no such row
        _forged("host", "DELETE", {"id": 10**6}),
        _forged("interface", "INSERT", {"id": 3}),  # a row that exists, unchanged
        _forged("host", "UPDATE", {"id": 1}),
        _forged("subnet", "UPDATE", {"id": 10**6}),  # unscoped: a full pass
        _forged("dhcp_server_subnet", "DELETE", {"dhcp_server_id": 10**6, "subnet_id": 1}),
        _forged("rack", "INSERT", {"id": 1}),  # a table nothing reads
        _forged("service", "DELETE", {"id": 1}),
    ]
)
# Forged doorbells that ask for a full pass, which repairs anything: rarer, so that
# they do not hide what the incremental passes got wrong.
DOORBELLS = st.sampled_from(
    [_forged("interface", "TRUNCATE", None), ({"event-id": "forged-garbage"}, "not json at all")]
)


@contextlib.contextmanager
def fresh_database(cluster: Any, template: str) -> Iterator[str]:
    """A database cloned from the migrated template for one example, dropped after it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield cluster.url(name)
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Outbox:
    """The change messages the triggers captured since the last call, as the relay
    encodes them (``cdc.outbox``'s query, ``change_message``'s headers)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.after = 0
        self.acks = itertools.count()

    def take(self) -> list[consumer.Delivery]:
        rows = self.conn.execute(outbox.FETCH_BATCH, {"after": self.after, "limit": 10_000})
        found = []
        for id_, table, op, body in rows.fetchall():
            self.after = id_
            headers = contract.headers(event_id=id_, table=table, op=op)
            found.append(delivery(headers, body, self.acks))
        return found


def delivery(headers: dict[str, str], body: str, acks: Iterator[int]) -> consumer.Delivery:
    return consumer.Delivery(
        generation=1, ack_id=f"a{next(acks)}", headers=headers, body=body, received=0.0
    )


def write_step(conn: psycopg.Connection[Any], writes: list[Write]) -> bool:
    """Run ``writes`` in one transaction; False if the database refused one (nothing
    changed then)."""
    try:
        with conn.transaction():
            for sql, params in writes:
                conn.execute(sql, params)
    except psycopg.errors.IntegrityError:  # every rule's error: SQLSTATE class 23
        return False
    return True


def fresh_text(
    engine: sqlalchemy.Engine, config: generator_settings.ApplySettings, server: int | None
) -> str:
    document, _ = passes.prepare(
        engine, config=config, metrics=metrics_module.Metrics(), server=server
    )
    return document.text


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    steps=STEPS,
    fmt=st.sampled_from(["isc", "isc", "kea"]),
    may_drop=st.booleans(),
    data=st.data(),
)
def test_incremental_passes_equal_a_fresh_full_pass(
    pg_cluster: Any,
    template_db: str,
    steps: list[list[Write]],
    fmt: render.Format,
    may_drop: bool,
    data: st.DataObject,
) -> None:
    with (
        fresh_database(pg_cluster, template_db) as url,
        tempfile.TemporaryDirectory(prefix="mdb-eq-") as tmp,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        conn.execute(SEED)
        engine = read.make_engine(url)
        try:
            check_sequence(conn, engine, Path(tmp), steps, fmt, may_drop, data)
        finally:
            engine.dispose()


def check_sequence(
    conn: psycopg.Connection[Any],
    engine: sqlalchemy.Engine,
    tmp: Path,
    steps: list[list[Write]],
    fmt: render.Format,
    may_drop: bool,
    data: st.DataObject,
) -> None:
    configs = {
        scope: generator_settings.ApplySettings(
            fmt=fmt, output=tmp / f"scope-{scope}.conf", syntax_check=False
        )
        for scope in SCOPES
    }
    pipelines = {
        scope: passes.Pipeline(
            engine, config=configs[scope], metrics=metrics_module.Metrics(), server=scope
        )
        for scope in SCOPES
    }
    for scope, pipeline in pipelines.items():
        assert pipeline.full() is not None
        assert pipeline.document().text == fresh_text(engine, configs[scope], scope)
    messages = Outbox(conn)
    acks = itertools.count(10**6)
    missed = dict.fromkeys(SCOPES, False)  # a message was dropped since the last full pass
    applied = 0
    for number, writes in enumerate(steps):
        last = number == len(steps) - 1
        if write_step(conn, writes):
            applied += 1
        elif not last:
            continue  # refused: nothing was written, nothing captured
        captured = messages.take()
        for scope, pipeline in pipelines.items():
            tables = read.tables_read(server=scope)
            sent = list(captured)
            if may_drop and sent:
                dropped = data.draw(st.sets(st.sampled_from(range(len(sent))), max_size=1))
                sent = [m for i, m in enumerate(sent) if i not in dropped]
                missed[scope] = missed[scope] or bool(dropped)
            sent += data.draw(st.lists(st.sampled_from(sent), max_size=2)) if sent else []
            forged = data.draw(st.lists(FORGED, max_size=2))
            if data.draw(st.integers(0, 9)) == 0:
                forged.append(data.draw(DOORBELLS))
            sent += [delivery(h, b, acks) for h, b in forged]
            sent = data.draw(st.permutations(sent))
            cut = data.draw(st.integers(0, len(sent)))  # delivered over two passes
            for part in (sent[:cut], sent[cut:]):
                plan = changes.plan(
                    [changes.classify(m, tables=tables) for m in part], server=scope
                )
                if not plan.empty():
                    assert pipeline.incremental(plan) is not None
            want = fresh_text(engine, configs[scope], scope)
            context = f"step {number} {writes}, scope {scope}, {fmt}"
            if not missed[scope]:
                assert pipeline.document().text == want, context
            # the daemon's periodic reconciliation: a drop is repaired by a later one
            reconcile = data.draw(st.booleans()) or (last and missed[scope])
            if reconcile:
                had_missed, missed[scope] = missed[scope], False
                assert pipeline.full() is not None
                if not had_missed:
                    assert pipeline.last_suspects == [], context
                assert pipeline.document().text == want, context
    event(f"steps applied: {applied} of {len(steps)}")
    # The files in place are what the pipelines rendered last.
    for scope, pipeline in pipelines.items():
        assert configs[scope].output.read_text() == pipeline.document().text
