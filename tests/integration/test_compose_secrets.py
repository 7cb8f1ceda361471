"""The files scripts/compose-secrets writes, in a real ActiveMQ running
deploy/activemq/activemq-secure.xml as docker-compose.yml runs it: the generated
credentials.properties byte for byte, the generated PKCS12 keystore, and clients that
use only the generated CA file and URL files. The compose health check runs here too,
against this broker and an open one.

There is no Docker engine here: the broker is started by scripts/services.py (~15 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import services
import yaml

from cdc import cli as relay_cli
from machinedb import stomp_url
from tests.conftest import require

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SECRETS = ROOT / "scripts" / "compose-secrets"
DEADLINE = 20.0  # seconds for a broker answer
CHANGES = "/topic/VirtualTopic.machinedb.changes"
USERS = ("relay", "generator", "admin")


def read_properties(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="latin-1").splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {key.strip(): value for key, value in pairs}


class ComposeBroker(services.ActiveMQBroker):
    """The secured broker with the generated credentials.properties and keystore."""

    def __init__(self, directory: Path, secrets_dir: Path) -> None:
        properties = read_properties(secrets_dir / "credentials.properties")
        keystore = services.Keystore(
            path=secrets_dir / "broker.p12",
            password=properties["machinedb.ssl.keystore.password"],
            cert_pem=secrets_dir / "broker-ca.pem",
        )
        passwords = {user: properties[f"machinedb.{user}.password"] for user in USERS}
        super().__init__(directory, secure=True, passwords=passwords, keystore=keystore)
        self.secrets_dir = secrets_dir

    def _prepare_secure(self) -> list[str]:
        options = super()._prepare_secure()
        # The generated file itself, not services.py's rendering of the same passwords.
        shutil.copyfile(
            self.secrets_dir / "credentials.properties", self.conf / "credentials.properties"
        )
        return options


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(bool(shutil.which("openssl")), "openssl (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    # "localhost" too, for the relay's own client below, which connects by that name.
    owner = [] if os.geteuid() == 0 else ["--app-uid", str(os.geteuid())]
    done = subprocess.run(
        [sys.executable, str(COMPOSE_SECRETS), "--dir", str(directory),
         "--host", "activemq", "--host", "localhost", *owner],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def compose_broker(secrets_dir: Path) -> Iterator[ComposeBroker]:
    have = (services.ACTIVEMQ_HOME / "bin" / "activemq.jar").exists()
    require(have and bool(shutil.which("java")), "ActiveMQ (apt-get install activemq)")
    broker = ComposeBroker(
        Path(tempfile.mkdtemp(prefix="machinedb-activemq-compose-")), secrets_dir
    )
    broker.start()
    yield broker
    broker.destroy()


def encode(command: str, headers: dict[str, str], body: str = "") -> bytes:
    lines = [command, *(f"{key}:{value}" for key, value in headers.items())]
    return ("\n".join(lines) + "\n\n" + body).encode() + b"\0"


class FrameReader:
    """STOMP frames from a socket: up to each NUL, skipping heart-beat end-of-lines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def answer(self) -> str:
        """The next frame that answers a client frame: a subscription's MESSAGE frames
        (e.g. a change another test published) are not answers and are skipped."""
        while (frame := self.next()).startswith("MESSAGE"):
            pass
        return frame

    def next(self) -> str:
        while b"\0" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(f"connection closed after {self.buffer!r}")
            self.buffer += chunk
        frame, self.buffer = self.buffer.split(b"\0", 1)
        return frame.lstrip(b"\r\n").decode()


def exchange(
    port: int, ca: Path, url_file: Path, frames: list[tuple[str, dict[str, str]]]
) -> list[str]:
    """CONNECT over TLS as the URL file says (verifying its host name against the CA
    file), send ``frames`` each with a receipt, and return the broker's answers."""
    config = stomp_url.parse(url_file.read_text().strip())
    endpoint = config.endpoints[0]
    assert endpoint.ssl
    assert config.username is not None and config.password is not None
    context = ssl.create_default_context(cafile=str(ca))
    answers = []
    with (
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=endpoint.host) as tls,
    ):
        reader = FrameReader(tls)
        login = {"login": config.username, "passcode": config.password}
        tls.sendall(encode("CONNECT", {"accept-version": "1.2", "host": endpoint.host, **login}))
        answers.append(reader.next())
        for number, (command, headers) in enumerate(frames):
            if not answers[-1].startswith(("CONNECTED", "RECEIPT")):
                break  # a server may close the connection after an ERROR
            tls.sendall(encode(command, {**headers, "receipt": f"r{number}"}))
            answers.append(reader.answer())
        if answers[-1].startswith(("CONNECTED", "RECEIPT")):
            tls.sendall(encode("DISCONNECT", {"receipt": "bye"}))
            reader.answer()
    return answers


def test_relay_connects_over_tls_and_may_publish_changes(
    compose_broker: ComposeBroker, secrets_dir: Path
) -> None:
    assert compose_broker.ssl_port is not None
    send = ("SEND", {"destination": CHANGES, "persistent": "true"})
    answers = exchange(
        compose_broker.ssl_port, secrets_dir / "broker-ca.pem", secrets_dir / "relay.url", [send]
    )
    assert answers[0].startswith("CONNECTED"), answers
    assert answers[1].startswith("RECEIPT"), answers


def test_generator_connects_over_tls_and_may_subscribe_to_its_queue(
    compose_broker: ComposeBroker, secrets_dir: Path
) -> None:
    assert compose_broker.ssl_port is not None
    queue = "/queue/Consumer.dhcp.VirtualTopic.machinedb.changes"
    subscribe = ("SUBSCRIBE", {"destination": queue, "id": "1", "ack": "client-individual"})
    publish = ("SEND", {"destination": CHANGES, "persistent": "true"})
    answers = exchange(
        compose_broker.ssl_port,
        secrets_dir / "broker-ca.pem",
        secrets_dir / "generator.url",
        [subscribe, publish],
    )
    assert answers[0].startswith("CONNECTED"), answers
    assert answers[1].startswith("RECEIPT"), answers
    assert answers[2].startswith("ERROR") and "not authorized" in answers[2], answers


def test_the_certificate_is_only_good_for_its_names(
    compose_broker: ComposeBroker, secrets_dir: Path
) -> None:
    assert compose_broker.ssl_port is not None
    context = ssl.create_default_context(cafile=str(secrets_dir / "broker-ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", compose_broker.ssl_port), timeout=DEADLINE) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="other.example.org").close()


def test_the_relay_command_connects_with_the_generated_files(
    compose_broker: ComposeBroker,
    secrets_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cdc-relay's own start-up check (the STOMP client it runs with), configured the
    way compose configures it: STOMP_URL_FILE and --ssl-ca-file."""
    assert compose_broker.ssl_port is not None
    url = (secrets_dir / "relay.url").read_text().strip()
    url_file = tmp_path / "relay.url"  # same user and password, this broker's address
    url_file.write_text(url.replace("@activemq:61614", f"@localhost:{compose_broker.ssl_port}"))
    url_file.chmod(0o600)
    monkeypatch.delenv("STOMP_URL", raising=False)
    monkeypatch.setenv("STOMP_URL_FILE", str(url_file))
    monkeypatch.setenv("DATABASE_URL", "postgresql://machinedb@localhost/machinedb")
    args = relay_cli.build_parser().parse_args(
        ["--ssl-ca-file", str(secrets_dir / "broker-ca.pem")]
    )
    config = relay_cli.load_settings(args)
    assert config.broker.username == "relay"
    relay_cli.check_broker(config)  # raises BrokerUnavailable when refused


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """Run the activemq service's health check from docker-compose.yml on ``port``."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["activemq"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script = test[3].replace("$$", "$")  # compose's escape for a literal $
    assert "/dev/tcp/127.0.0.1/61613" in script
    script = script.replace("/dev/tcp/127.0.0.1/61613", f"/dev/tcp/127.0.0.1/{port}")
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )


def test_healthcheck_passes_on_the_secured_broker(compose_broker: ComposeBroker) -> None:
    done = healthcheck(compose_broker.port)
    assert done.returncode == 0, done.stderr


def test_healthcheck_fails_on_an_open_broker(broker: services.ActiveMQBroker) -> None:
    """An open broker answers CONNECTED: unhealthy, so relay and generators wait."""
    done = healthcheck(broker.port)
    assert done.returncode != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert healthcheck(services.free_port()).returncode != 0
