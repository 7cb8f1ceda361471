"""Leader election: the relay holding a session advisory lock on its query connection
publishes; others wait. The lock dies with the connection, so a dead leader frees it.

A connection that went half-open keeps its lock on the server until the server's TCP
keepalives (set short by cdc.database) end it. When the holder is this very process's
earlier session (same application_name: host and pid), the relay knows that session is
dead and ends it at once instead of waiting as its own standby.
"""

from __future__ import annotations

import logging

from cdc import database

logger = logging.getLogger(__name__)

LOCK_KEY = 0x63646372  # 'cdcr'; below 2**31 so pg_locks shows it as classid 0, objid KEY
TERMINATE_WAIT = 5000  # milliseconds to wait for a stale session to end

HOLDER_SQL = """
SELECT a.pid, a.application_name
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1
   AND a.pid <> pg_backend_pid()
"""


def try_acquire(conn: database.Connection) -> bool:
    if _try_lock(conn):
        return True
    with database.translated():
        holder = conn.execute(HOLDER_SQL, [LOCK_KEY]).fetchone()
        if holder is None or holder[1] != database.application_name():
            return False
        conn.execute("SELECT pg_terminate_backend(%s, %s)", [holder[0], TERMINATE_WAIT])
    logger.info(
        "ended this relay's own stale session (backend %s) that still held the lock",
        holder[0],
        extra={"action": "stale_session_ended"},
    )
    return _try_lock(conn)


def _try_lock(conn: database.Connection) -> bool:
    with database.translated():
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()
    return bool(row and row[0])
