"""The change message: the one contract between the relay that sends it and every consumer.

A SEND frame with ``persistent:true``, ``content-type:application/json`` and the headers
below; a JSON body with ``BODY_FIELDS``. The relay builds the body from these names
(``cdc.outbox``) and the generator reads it through ``parse``: nothing else spells
them out. Delivery is at least once; ``event-id`` lets a consumer drop duplicates.

A message is a doorbell, not data: a consumer re-reads the rows that ``table`` and
``pk`` name. ``parse`` therefore never raises on hostile input; it says what the
message names, or that it names nothing usable.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass

CONTENT_TYPE = "application/json"

# headers
EVENT_ID = "event-id"
TABLE = "table"
OP = "op"

# body fields, in the order the relay writes them
ID, PK, BEFORE, AFTER, TXID, CAPTURED_AT = "id", "pk", "before", "after", "txid", "captured_at"
BODY_FIELDS = (ID, TABLE, OP, PK, BEFORE, AFTER, TXID, CAPTURED_AT)

OPS = frozenset({"INSERT", "UPDATE", "DELETE", "TRUNCATE"})
BODY_LIMIT = 64 * 1024  # characters; a larger body is not parsed

Key = tuple[tuple[str, int | str], ...]  # a primary key: (column, value) pairs, sorted


def headers(*, event_id: int, table: str, op: str) -> dict[str, str]:
    """The contract's headers of one change's SEND frame (values unescaped)."""
    return {EVENT_ID: str(event_id), TABLE: table, OP: op}


@dataclass(frozen=True, kw_only=True)
class ChangeRef:
    """What one message names. ``table`` is None when the message names no table."""

    event_id: str | None
    table: str | None
    op: str | None
    pk: Key | None  # None for TRUNCATE, or a missing or malformed key
    txid: int | None  # the capturing transaction
    captured_at: float | None  # unix time of the capture

    def names_rows(self) -> bool:
        """True when the message names specific rows (not a TRUNCATE, not malformed)."""
        return self.table is not None and self.pk is not None and self.op != "TRUNCATE"

    def key(self, column: str) -> int | None:
        """The integer value of one primary-key column, if the key has it."""
        for name, value in self.pk or ():
            if name == column and isinstance(value, int):
                return value
        return None


def parse(headers_: Mapping[str, str], body: str) -> ChangeRef:
    """What a received message names; hostile headers or bodies give Nones, never raise."""
    fields = _body(body)
    table = headers_.get(TABLE) or fields.get(TABLE)
    op = headers_.get(OP) or fields.get(OP)
    txid = fields.get(TXID)
    return ChangeRef(
        event_id=headers_.get(EVENT_ID) or _text(fields.get(ID)),
        table=table if isinstance(table, str) and table else None,
        op=op if op in OPS else None,
        pk=_key(fields.get(PK)),
        txid=txid if isinstance(txid, int) and not isinstance(txid, bool) else None,
        captured_at=_timestamp(fields.get(CAPTURED_AT)),
    )


def _body(body: str) -> dict[str, object]:
    if len(body) > BODY_LIMIT:
        return {}
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _key(value: object) -> Key | None:
    """A primary key object of scalar columns, or None."""
    if not isinstance(value, dict) or not value:
        return None
    pairs = []
    for column, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | str):
            return None
        pairs.append((str(column), item))
    return tuple(sorted(pairs))


def _text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
