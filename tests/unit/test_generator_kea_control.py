"""config-reload through a Kea-style unix control socket (a small stand-in server), and
what ``apply`` does when Kea refuses to load a new file."""

from __future__ import annotations

import hashlib
import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from generator import apply, kea_control, settings


@dataclass
class FakeKea:
    """Answers each command with the next queued answer; records the commands and,
    when ``config`` is set, that file's content at the moment each command arrived."""

    path: str
    config: Path | None = None
    received: list[dict[str, object]] = field(default_factory=list)
    answers: list[object] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def kea() -> Iterator[FakeKea]:
    directory = tempfile.mkdtemp(prefix="kea-")  # short path: sun_path is 108 bytes
    fake = FakeKea(path=str(Path(directory) / "ctrl"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(fake.path)
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                fake.received.append(json.loads(conn.recv(65536)))
                if fake.config is not None:
                    fake.seen.append(fake.config.read_text())
                conn.sendall(json.dumps(fake.answers.pop(0)).encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield fake
    server.close()
    Path(fake.path).unlink(missing_ok=True)
    Path(directory).rmdir()


def test_config_reload_success(kea: FakeKea) -> None:
    kea.answers.append({"result": 0, "text": "Configuration successful."})
    assert kea_control.config_reload(kea.path) == "Configuration successful."
    assert kea.received == [{"command": "config-reload"}]


def test_config_reload_list_answer(kea: FakeKea) -> None:
    kea.answers.append([{"result": 0, "text": "ok"}])
    assert kea_control.config_reload(kea.path) == "ok"


def test_config_reload_refused(kea: FakeKea) -> None:
    kea.answers.append({"result": 1, "text": "bad subnet"})
    with pytest.raises(kea_control.ControlError, match="bad subnet"):
        kea_control.config_reload(kea.path)


def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(kea_control.ControlError, match="kea control socket"):
        kea_control.config_reload(str(tmp_path / "none"))


# apply() with a Kea control socket

OK = {"result": 0, "text": "Configuration successful."}
REFUSED = {"result": 1, "text": "Config reload failed: unable to open '/nowhere/leases.csv'"}


def kea_text(reservations: int) -> str:
    subnet = {"id": 1, "subnet": "10.0.0.0/24", "reservations": [{}] * reservations}
    return json.dumps({"Dhcp4": {"subnet4": [subnet]}}, indent=2) + "\n"


def kea_config(tmp_path: Path, kea: FakeKea) -> settings.ApplySettings:
    output = tmp_path / "kea-dhcp4.conf"
    kea.config = output
    return settings.ApplySettings(
        fmt="kea", output=output, kea_control_socket=kea.path, syntax_check=False
    )


def loaded_digest(config: settings.ApplySettings) -> str:
    marker = config.output.with_name(config.output.name + apply.LOADED_SUFFIX)
    return marker.read_text().strip()


def test_refused_config_reload_restores_previous_and_reloads_it(
    tmp_path: Path, kea: FakeKea
) -> None:
    config = kea_config(tmp_path, kea)
    kea.answers.append(OK)
    assert apply.apply(kea_text(3), config=config).reloaded
    kea.answers.extend([REFUSED, OK])
    with pytest.raises(apply.ReloadFailed) as info:
        apply.apply(kea_text(4), config=config)
    message = str(info.value)
    assert "result 1" in message and "unable to open" in message
    assert "previous file restored and reloaded" in message
    assert config.output.read_text() == kea_text(3)
    # Kea was asked to load the new file, refused, then loaded the restored one
    assert kea.seen == [kea_text(3), kea_text(4), kea_text(3)]
    assert kea.received == [{"command": "config-reload"}] * 3
    assert loaded_digest(config) == hashlib.sha256(kea_text(3).encode()).hexdigest()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refused_twice_is_reported_and_the_previous_file_stays(
    tmp_path: Path, kea: FakeKea
) -> None:
    config = kea_config(tmp_path, kea)
    kea.answers.append(OK)
    apply.apply(kea_text(3), config=config)
    kea.answers.extend([REFUSED, {"result": 1, "text": "still broken"}])
    with pytest.raises(apply.ReloadFailed, match=r"reloading it failed too: .*still broken"):
        apply.apply(kea_text(4), config=config)
    assert config.output.read_text() == kea_text(3)
    assert kea.seen == [kea_text(3), kea_text(4), kea_text(3)]
    # Kea may be serving nothing now: the next pass reloads even the unchanged file
    kea.answers.append(OK)
    outcome = apply.apply(kea_text(3), config=config)
    assert (outcome.changed, outcome.reloaded) == (False, True)
    assert loaded_digest(config) == hashlib.sha256(kea_text(3).encode()).hexdigest()
    assert kea.seen[-1] == kea_text(3)


def test_refused_first_config_is_reported(tmp_path: Path, kea: FakeKea) -> None:
    """Nothing to go back to: the failure is reported and the file is not marked loaded."""
    config = kea_config(tmp_path, kea)
    kea.answers.append(REFUSED)
    with pytest.raises(apply.ReloadFailed, match="result 1"):
        apply.apply(kea_text(3), config=config)
    assert not config.output.with_name(config.output.name + apply.LOADED_SUFFIX).exists()
    assert kea.received == [{"command": "config-reload"}]
