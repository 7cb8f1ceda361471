"""One outbox row as the STOMP SEND frame the broker stores.

The JSON body is built by PostgreSQL (``cdc/sql/fetch_batch.sql`` with the fields of
``machinedb.change_message``); this module only wraps it in a frame, with that
contract's headers, so encoding costs a few string operations per change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machinedb import change_message as contract

CONTENT_TYPE = contract.CONTENT_TYPE
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"})


@dataclass(frozen=True, kw_only=True)
class Change:
    id: int
    table: str
    op: str
    body: bytes  # {"id","table","op","pk","before","after","txid","captured_at"}

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Change:
        change_id, table, op, body = row
        return cls(id=int(change_id), table=str(table), op=str(op), body=str(body).encode())


def escape(value: str) -> str:
    """A STOMP 1.2 header value with its special characters escaped."""
    return value.translate(_ESCAPES)


def frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = "".join(f"{key}:{escape(value)}\n" for key, value in headers.items())
    return f"{command}\n{lines}\n".encode() + body + b"\x00"


def send_frame(
    change: Change, *, destination: str, transaction: str | None, receipt: str | None = None
) -> bytes:
    """The persistent SEND for one change, inside a STOMP transaction (or, with
    ``transaction=None``, on its own, usually with a ``receipt``)."""
    named = contract.headers(event_id=change.id, table=change.table, op=change.op)
    head = (
        f"SEND\ndestination:{escape(destination)}\npersistent:true\n"
        f"content-type:{CONTENT_TYPE}\n"
        + "".join(f"{key}:{escape(value)}\n" for key, value in named.items())
        + (f"transaction:{escape(transaction)}\n" if transaction is not None else "")
        + (f"receipt:{escape(receipt)}\n" if receipt is not None else "")
        + f"content-length:{len(change.body)}\n\n"
    )
    return head.encode() + change.body + b"\x00"
