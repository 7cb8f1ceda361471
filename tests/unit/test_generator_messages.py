"""Classifying change messages: only the table matters, hostile input never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator import consumer


def delivery(headers: dict[str, str], body: str = "{}") -> consumer.Delivery:
    return consumer.Delivery(generation=1, ack_id="a1", headers=headers, body=body, received=0.0)


@pytest.mark.parametrize("table", ["host", "interface", "subnet"])
def test_tables_that_affect_dhcp_are_relevant(table: str) -> None:
    assert consumer.classify(delivery({"table": table, "op": "UPDATE"})).kind == consumer.RELEVANT


@pytest.mark.parametrize("table", ["service", "host_service", "hardware_type"])
def test_other_tables_are_unrelated(table: str) -> None:
    assert consumer.classify(delivery({"table": table})).kind == consumer.UNRELATED


def test_table_from_body_when_header_missing() -> None:
    body = json.dumps({"table": "interface", "captured_at": "2026-01-02T03:04:05+00:00"})
    change = consumer.classify(delivery({}, body))
    assert change.kind == consumer.RELEVANT
    assert change.captured_at == 1767323045.0


@pytest.mark.parametrize(
    "body", ["not json", "[1, 2]", "null", '{"table": 5}', "x" * (consumer.BODY_LIMIT + 1)]
)
def test_bad_messages_are_doorbells(body: str) -> None:
    change = consumer.classify(delivery({"message-id": "m1"}, body))
    assert change.kind == consumer.BAD
    assert change.captured_at is None


def test_unknown_table_is_a_doorbell() -> None:
    assert consumer.classify(delivery({"table": "cdc.change"})).kind == consumer.BAD


def test_bad_capture_time_is_ignored() -> None:
    body = json.dumps({"table": "host", "captured_at": "yesterday"})
    assert consumer.classify(delivery({"table": "host"}, body)).captured_at is None


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=50)), st.text(max_size=200))
def test_classify_never_raises(headers: dict[str, str], body: str) -> None:
    assert consumer.classify(delivery(headers, body)).kind in (
        consumer.RELEVANT,
        consumer.UNRELATED,
        consumer.BAD,
    )


def test_txid_is_read_from_the_body() -> None:
    body = json.dumps({"table": "host", "txid": 1234})
    assert consumer.classify(delivery({"table": "host"}, body)).txid == 1234
    forged = json.dumps({"table": "host", "txid": "1234"})
    assert consumer.classify(delivery({"table": "host"}, forged)).txid is None
