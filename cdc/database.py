"""PostgreSQL connections for the relay, and the one place driver errors are translated."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from cdc import errors, stoppable

CONNECT_TIMEOUT = 10  # seconds
KEEPALIVES_IDLE = 10  # seconds of silence before the first TCP keepalive probe
KEEPALIVES_INTERVAL = 5  # seconds between probes
KEEPALIVES_COUNT = 3  # unanswered probes before the kernel drops the connection
TCP_USER_TIMEOUT = 20_000  # milliseconds an unacknowledged send may wait

Connection = psycopg.Connection[tuple[Any, ...]]


def application_name() -> str:
    """Who we are in pg_stat_activity (``cdc-relay status`` shows the leader by it)."""
    return f"cdc-relay {socket.gethostname()[:30]} pid {os.getpid()}"


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn psycopg errors into DatabaseUnavailable (the relay reconnects on it)."""
    try:
        yield
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise errors.DatabaseUnavailable(reason) from exc


def connect(url: str, *, stop: threading.Event | None = None) -> Connection:
    """An autocommit connection with keepalives, UTC time and asynchronous commits;
    Stopping as soon as ``stop`` is set while the server has not answered yet.

    Asynchronous commit is safe here: the relay only deletes published rows and flips the
    doorbell; losing either in a crash means a resend (allowed) or one extra drain.
    """
    return stoppable.call(lambda: _connect(url), stop=stop, cleanup=close)


def _connect(url: str) -> Connection:
    with translated():
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            keepalives=1,
            keepalives_idle=KEEPALIVES_IDLE,
            keepalives_interval=KEEPALIVES_INTERVAL,
            keepalives_count=KEEPALIVES_COUNT,
            tcp_user_timeout=TCP_USER_TIMEOUT,
            application_name=application_name(),
            # the server side gets short keepalives too: a leader whose connection went
            # half-open must not keep the leader lock for the kernel's default two hours
            options=(
                "-c TimeZone=UTC -c synchronous_commit=off"
                f" -c tcp_keepalives_idle={KEEPALIVES_IDLE}"
                f" -c tcp_keepalives_interval={KEEPALIVES_INTERVAL}"
                f" -c tcp_keepalives_count={KEEPALIVES_COUNT}"
                f" -c tcp_user_timeout={TCP_USER_TIMEOUT}"
            ),
        )
    return conn


def close(conn: Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
