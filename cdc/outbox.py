"""Reading and deleting outbox rows (``cdc.change``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cdc import database, message, sqlfiles
from machinedb import change_message as contract

logger = logging.getLogger(__name__)

# The outbox column behind each field of the message body.
BODY_COLUMNS = {
    contract.ID: "id",
    contract.TABLE: "table_name",
    contract.OP: "op",
    contract.PK: "pk",
    contract.BEFORE: "before",
    contract.AFTER: "after",
    contract.TXID: "txid",
    contract.CAPTURED_AT: "captured_at",
}
_BODY = "json_build_object({})".format(
    ", ".join(f"'{field}', {column}" for field, column in BODY_COLUMNS.items())
)
FETCH_BATCH = sqlfiles.load("fetch_batch").replace("{body}", _BODY)


def fetch(conn: database.Connection, *, after_id: int, limit: int) -> list[message.Change]:
    """Up to ``limit`` committed changes with id > ``after_id``, in id order."""
    with database.translated():
        rows = conn.execute(FETCH_BATCH, {"after": after_id, "limit": limit})
        return [message.Change.from_row(row) for row in rows.fetchall()]


def delete(conn: database.Connection, ids: Sequence[int]) -> None:
    """Forget changes the broker confirmed it stored."""
    with database.translated():
        conn.execute("DELETE FROM cdc.change WHERE id = ANY(%s)", [list(ids)])
    logger.debug("deleted %d published changes", len(ids))


def has_visible(conn: database.Connection) -> bool:
    """Is any committed change waiting?"""
    with database.translated():
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM cdc.change)").fetchone()
    return bool(row and row[0])
