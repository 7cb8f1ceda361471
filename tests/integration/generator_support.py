"""Helpers for the generator's integration tests: run the command, publish doorbells,
wait for conditions with deadlines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stomp

from tests import waiting

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / ".venv" / "bin" / "dhcp-generator"
RELAY = ROOT / ".venv" / "bin" / "cdc-relay"
DEADLINE = 30.0  # seconds


def wait_for(condition: Callable[[], Any], *, deadline: float = DEADLINE, what: str = "") -> Any:
    """``waiting.wait_for`` with this module's default deadline."""
    return waiting.wait_for(condition, deadline=deadline, what=what)


def generator_argv(*args: str) -> list[str]:
    return [str(GENERATOR), *args]


def run_generator(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        generator_argv(*args),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def reload_command(log: Path) -> str:
    """A reload command that appends one line per reload to ``log``."""
    return f"{sys.executable} -c \"open('{log}', 'a').write('reload\\n')\""


def reload_count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


class Daemon:
    """``dhcp-generator`` as a subprocess, its log kept in a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                generator_argv(*self.args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=DEADLINE)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def metric(port: int, name: str) -> float | None:
    """One sample from the daemon's /metrics (labels included in ``name``)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


class Publisher:
    """Sends change messages in the DESIGN.md format, each confirmed by a receipt."""

    def __init__(self, port: int, destination: str) -> None:
        self.destination = destination
        self._receipts: set[str] = set()
        self._cond = threading.Condition()
        self.conn = stomp.Connection12([("127.0.0.1", port)])
        self.conn.set_listener("p", self._Listener(self))
        self.conn.connect(wait=True)
        self._next_id = 1

    class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def __init__(self, owner: Publisher) -> None:
            self.owner = owner

        def on_receipt(self, frame: Any) -> None:
            with self.owner._cond:
                self.owner._receipts.add(frame.headers["receipt-id"])
                self.owner._cond.notify_all()

    def send(
        self, table: str, op: str = "UPDATE", *, body: str | None = None, **headers: str
    ) -> None:
        event_id = str(self._next_id)
        self._next_id += 1
        if body is None:
            body = json.dumps(
                {
                    "id": int(event_id),
                    "table": table,
                    "op": op,
                    "pk": {"id": 1},
                    "before": None,
                    "after": None,
                    "txid": 1,
                    "captured_at": "2026-01-01T00:00:00+00:00",
                }
            )
        receipt = uuid.uuid4().hex
        all_headers = {"persistent": "true", "event-id": event_id, "receipt": receipt, **headers}
        if table:
            all_headers.update({"table": table, "op": op})
        self.conn.send(self.destination, body, content_type="application/json", headers=all_headers)
        with self._cond:
            if not self._cond.wait_for(lambda: receipt in self._receipts, timeout=DEADLINE):
                raise AssertionError("no receipt for a published change")

    def close(self) -> None:
        self.conn.disconnect()
