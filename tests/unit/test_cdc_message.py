"""The STOMP frames the relay writes: persistent SEND with the contract's headers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cdc import message

CHANGE = message.Change(id=42, table="public.host", op="UPDATE", body=b'{"id": 42}')


def parse(frame: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, rest = frame.partition(b"\n\n")
    command, *lines = head.decode().split("\n")
    headers = dict(line.split(":", 1) for line in lines)
    assert rest.endswith(b"\x00")
    return command, headers, rest[:-1]


def test_send_frame_carries_the_contract_headers_and_body() -> None:
    frame = message.send_frame(CHANGE, destination="/topic/VirtualTopic.x", transaction="tx-1")
    command, headers, body = parse(frame)
    assert command == "SEND"
    assert headers == {
        "destination": "/topic/VirtualTopic.x",
        "persistent": "true",
        "content-type": "application/json",
        "event-id": "42",
        "table": "public.host",
        "op": "UPDATE",
        "transaction": "tx-1",
        "content-length": str(len(CHANGE.body)),
    }
    assert body == CHANGE.body


def test_content_length_counts_bytes_not_characters() -> None:
    change = message.Change(id=1, table="host", op="INSERT", body='{"d": "héé"}'.encode())
    _, headers, body = parse(message.send_frame(change, destination="/queue/q", transaction="t"))
    assert int(headers["content-length"]) == len(body) == len(change.body)


def test_from_row_encodes_the_sql_built_body() -> None:
    change = message.Change.from_row((7, "service", "DELETE", '{"id" : 7}'))
    assert change == message.Change(id=7, table="service", op="DELETE", body=b'{"id" : 7}')


def test_control_frames() -> None:
    assert message.frame("COMMIT", {"transaction": "tx-1", "receipt": "batch-1"}) == (
        b"COMMIT\ntransaction:tx-1\nreceipt:batch-1\n\n\x00"
    )


@given(st.text())
def test_escaped_header_values_cannot_break_a_frame(value: str) -> None:
    escaped = message.escape(value)
    assert "\n" not in escaped
    assert ":" not in escaped
    assert "\r" not in escaped
    unescaped = (
        escaped.replace("\\\\", "\x00")
        .replace("\\n", "\n")
        .replace("\\r", "\r")
        .replace("\\c", ":")
        .replace("\x00", "\\")
    )
    if "\x00" not in value:
        assert unescaped == value
