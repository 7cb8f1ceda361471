"""The change-message contract: what the relay writes is what the generator reads."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from cdc import message, outbox
from machinedb import change_message as contract


def test_the_relay_fills_every_body_field_from_a_column() -> None:
    assert tuple(outbox.BODY_COLUMNS) == contract.BODY_FIELDS
    for field in contract.BODY_FIELDS:
        assert f"'{field}', " in outbox.FETCH_BATCH
    assert "{body}" not in outbox.FETCH_BATCH


def test_a_frame_the_relay_sends_parses_back() -> None:
    body = json.dumps(
        {
            "id": 7,
            "table": "interface",
            "op": "UPDATE",
            "pk": {"id": 42},
            "before": {},
            "after": {},
            "txid": 991,
            "captured_at": "2026-01-02T03:04:05+00:00",
        }
    )
    change = message.Change(id=7, table="interface", op="UPDATE", body=body.encode())
    frame = message.send_frame(change, destination="/topic/x", transaction="t1").decode()
    head, _, rest = frame.partition("\n\n")
    headers = dict(line.split(":", 1) for line in head.splitlines()[1:])
    ref = contract.parse(headers, rest.rstrip("\x00"))
    assert (ref.event_id, ref.table, ref.op) == ("7", "interface", "UPDATE")
    assert ref.pk == (("id", 42),)
    assert ref.key("id") == 42
    assert ref.txid == 991
    assert ref.captured_at == 1767323045.0
    assert ref.names_rows()


def test_a_composite_key_is_kept_whole() -> None:
    body = json.dumps({"pk": {"subnet_id": 3, "dhcp_server_id": 1}})
    ref = contract.parse({"table": "dhcp_server_subnet", "op": "DELETE"}, body)
    assert ref.key("dhcp_server_id") == 1
    assert ref.key("subnet_id") == 3


def test_truncate_and_malformed_keys_name_no_rows() -> None:
    assert not contract.parse({"table": "host", "op": "TRUNCATE"}, "{}").names_rows()
    for pk in ([1], {"id": [1]}, {"id": True}, {}, "5", None):
        ref = contract.parse({"table": "host", "op": "UPDATE"}, json.dumps({"pk": pk}))
        assert ref.pk is None
        assert not ref.names_rows()


def test_headers_win_over_the_body_and_bad_values_are_dropped() -> None:
    body = json.dumps({"table": "subnet", "op": "DROP", "txid": "12", "captured_at": "soon"})
    ref = contract.parse({"table": "host"}, body)
    assert ref.table == "host"
    assert ref.op is None
    assert ref.txid is None
    assert ref.captured_at is None


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=50)), st.text(max_size=300))
def test_parse_never_raises(headers: dict[str, str], body: str) -> None:
    ref = contract.parse(headers, body)
    assert ref.table is None or isinstance(ref.table, str)
