"""config-reload through a Kea-style unix control socket (a small stand-in server)."""

from __future__ import annotations

import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator import kea_control


@pytest.fixture
def kea_socket() -> Iterator[tuple[str, list[dict[str, object]], list[object]]]:
    """A socket answering each command with the next queued answer."""
    directory = tempfile.mkdtemp(prefix="kea-")  # short path: sun_path is 108 bytes
    path = str(Path(directory) / "ctrl")
    received: list[dict[str, object]] = []
    answers: list[object] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                received.append(json.loads(conn.recv(65536)))
                conn.sendall(json.dumps(answers.pop(0)).encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, received, answers
    server.close()
    Path(path).unlink(missing_ok=True)


def test_config_reload_success(
    kea_socket: tuple[str, list[dict[str, object]], list[object]],
) -> None:
    path, received, answers = kea_socket
    answers.append({"result": 0, "text": "Configuration successful."})
    assert kea_control.config_reload(path) == "Configuration successful."
    assert received == [{"command": "config-reload"}]


def test_config_reload_list_answer(
    kea_socket: tuple[str, list[dict[str, object]], list[object]],
) -> None:
    path, _, answers = kea_socket
    answers.append([{"result": 0, "text": "ok"}])
    assert kea_control.config_reload(path) == "ok"


def test_config_reload_refused(
    kea_socket: tuple[str, list[dict[str, object]], list[object]],
) -> None:
    path, _, answers = kea_socket
    answers.append({"result": 1, "text": "bad subnet"})
    with pytest.raises(kea_control.ControlError, match="bad subnet"):
        kea_control.config_reload(path)


def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(kea_control.ControlError, match="kea control socket"):
        kea_control.config_reload(str(tmp_path / "none"))
