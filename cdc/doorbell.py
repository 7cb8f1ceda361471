"""The doorbell: LISTEN for 'cdc_change', and arm or disarm the writers' NOTIFY.

Writers NOTIFY only while ``cdc.doorbell.armed`` (a NOTIFY serializes commits
cluster-wide). The relay disarms when it wakes and re-arms before it sleeps. A writer
that read "disarmed" just before the re-arm committed was, at that moment, a transaction
in progress: ``in_progress()`` lists those, and ``all_finished()`` tells the relay when
to look once more, so such a change waits well under a second, not the fallback interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from cdc import database

logger = logging.getLogger(__name__)

CHANNEL = "cdc_change"
MAX_WATCHED = 1000  # transactions watched after a re-arm


def listen(conn: database.Connection) -> None:
    with database.translated():
        conn.execute(f"LISTEN {CHANNEL}")


def disarm(conn: database.Connection) -> None:
    with database.translated():
        conn.execute(
            "UPDATE cdc.doorbell SET armed = false, changed_at = clock_timestamp() WHERE armed"
        )


def arm(conn: database.Connection) -> None:
    with database.translated():
        conn.execute(
            "UPDATE cdc.doorbell SET armed = true, changed_at = clock_timestamp() WHERE NOT armed"
        )


def in_progress(conn: database.Connection) -> list[int]:
    """Transactions running now (take this after ``arm`` committed, before the last drain)."""
    with database.translated():
        rows = conn.execute(
            "SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x LIMIT %s",
            [MAX_WATCHED],
        ).fetchall()
    return [int(r[0]) for r in rows]


def all_finished(conn: database.Connection, xids: Sequence[int]) -> bool:
    with database.translated():
        row = conn.execute(
            "SELECT coalesce(bool_and(pg_xact_status(x::text::xid8) IS DISTINCT FROM "
            "'in progress'), true) FROM unnest(%s::bigint[]) AS x",
            [list(xids)],
        ).fetchone()
    return bool(row and row[0])


def wait(conn: database.Connection, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a doorbell; True when one rang."""
    with database.translated():
        rang = any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
    return rang


def discard_pending(conn: database.Connection) -> None:
    """Drop doorbells already received: the drain that follows covers them."""
    with database.translated():
        for _ in conn.notifies(timeout=0.0):
            pass


def probe(conn: database.Connection) -> float:
    """A round trip on the LISTEN connection (liveness); returns its duration."""
    start = time.monotonic()
    with database.translated():
        conn.execute("SELECT 1")
    return time.monotonic() - start
