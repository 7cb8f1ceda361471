"""Reading and deleting outbox rows (``cdc.change``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cdc import database, message, sqlfiles

logger = logging.getLogger(__name__)


def fetch(conn: database.Connection, *, after_id: int, limit: int) -> list[message.Change]:
    """Up to ``limit`` committed changes with id > ``after_id``, in id order."""
    with database.translated():
        rows = conn.execute(sqlfiles.load("fetch_batch"), {"after": after_id, "limit": limit})
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
