"""What messages ask of the generator: relevance from the tables it reads, rows to re-read."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator import changes, consumer, read

UNSCOPED = read.tables_read(server=None)
SCOPED = read.tables_read(server=7)


def delivery(headers: dict[str, str], body: str = "{}") -> consumer.Delivery:
    return consumer.Delivery(generation=1, ack_id="a1", headers=headers, body=body, received=0.0)


def change(
    table: str, pk: object, op: str = "UPDATE", tables: frozenset[str] = UNSCOPED
) -> changes.Change:
    body = json.dumps({"table": table, "op": op, "pk": pk})
    return changes.classify(delivery({"table": table, "op": op}, body), tables=tables)


def test_relevance_comes_from_what_the_reads_use() -> None:
    assert {"host", "interface", "subnet"} <= UNSCOPED
    assert "dhcp_server_subnet" not in UNSCOPED  # without --server every subnet is rendered
    assert {"host", "interface", "subnet", "dhcp_server_subnet"} <= SCOPED
    # boot options (migration 0007): a host's hardware type gives its defaults
    assert "hardware_type" in UNSCOPED and "hardware_type" in SCOPED
    for table in ("service", "host_service", "rack"):
        assert table not in SCOPED
    # a pair's peers are named by their dhcp_server rows (Kea: this-server-name, peers)
    assert {"dhcp_failover", "dhcp_server"} <= SCOPED
    assert "dhcp_server" not in UNSCOPED


@pytest.mark.parametrize("table", ["host", "interface", "subnet", "hardware_type"])
def test_tables_that_affect_dhcp_are_relevant(table: str) -> None:
    assert change(table, {"id": 1}).kind == changes.RELEVANT


@pytest.mark.parametrize("table", ["service", "host_service", "rack", "cdc.x"])
def test_a_table_no_render_reads_is_acknowledged_quietly(
    table: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert change(table, {"id": 1}).kind == changes.UNRELATED
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_message_without_a_table_is_a_doorbell_for_a_full_pass() -> None:
    item = changes.classify(delivery({"message-id": "m1"}, "not json"), tables=UNSCOPED)
    assert item.kind == changes.BAD
    assert changes.plan([item], server=None).full


def test_rows_named_are_re_read_by_key() -> None:
    plan = changes.plan(
        [change("interface", {"id": 3}), change("host", {"id": 9}), change("interface", {"id": 3})],
        server=None,
    )
    assert (plan.full, plan.interface_ids, plan.host_ids) == (False, {3}, {9})


@pytest.mark.parametrize(
    ("table", "pk", "op"),
    [
        ("subnet", {"id": 2}, "UPDATE"),  # unscoped: every subnet change is a full pass
        ("interface", None, "TRUNCATE"),
        ("interface", {"id": "x"}, "UPDATE"),  # a key that cannot be re-read
        ("host", {"uuid": 5}, "UPDATE"),
        ("hardware_type", {"id": 1}, "UPDATE"),  # boot options of every host of that type
    ],
)
def test_what_cannot_be_re_read_by_row_asks_for_a_full_pass(
    table: str, pk: object, op: str
) -> None:
    assert changes.plan([change(table, pk, op)], server=None).full


def test_a_scoped_generator_checks_subnets_and_ignores_other_servers_scopes() -> None:
    subnet = change("subnet", {"id": 4}, tables=SCOPED)
    other = change("dhcp_server_subnet", {"dhcp_server_id": 8, "subnet_id": 4}, tables=SCOPED)
    ours = change("dhcp_server_subnet", {"dhcp_server_id": 7, "subnet_id": 4}, tables=SCOPED)
    plan = changes.plan([subnet, other], server=7)
    assert (plan.full, plan.subnet_ids) == (False, {4})  # one indexed read decides
    assert changes.plan([ours], server=7).full


def test_capture_time_and_txid_come_from_the_body() -> None:
    body = json.dumps({"table": "host", "txid": 1234, "captured_at": "2026-01-02T03:04:05+00:00"})
    item = changes.classify(delivery({"table": "host"}, body), tables=UNSCOPED)
    assert (item.txid, item.captured_at) == (1234, 1767323045.0)


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=50)), st.text(max_size=200))
def test_classify_and_plan_never_raise(headers: dict[str, str], body: str) -> None:
    item = changes.classify(delivery(headers, body), tables=SCOPED)
    assert item.kind in (changes.RELEVANT, changes.UNRELATED, changes.BAD)
    changes.plan([item], server=7)
