"""Broker security against a real ActiveMQ running deploy/activemq/activemq-secure.xml:
authentication, the authorization map, STOMP over TLS with a certificate made here,
the real relay and generator end to end over TLS, forged messages, and passwords that
never show in logs, --help or errors.

One private secured broker serves the whole module (~15 s to start).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import services
import stomp
import stomp.exception

from generator import cli as generator_cli
from tests.conftest import require
from tests.integration.generator_support import GENERATOR, RELAY, metric, wait_for

pytestmark = [pytest.mark.broker]

DEADLINE = 20.0  # seconds for a broker answer
E2E_DEADLINE = 60.0  # seconds for a DB change to reach the generator's file
# Passwords with characters that need escaping in credentials.properties and in a URL.
PASSWORDS = {
    "relay": f"relay#{uuid.uuid4().hex[:12]}:!",
    "generator": f"gen={uuid.uuid4().hex[:12]} x",
    # A backslash, but not before c, n, r or another one: ActiveMQ would decode those
    # (machinedb.stomp_url refuses such passwords).
    "admin": f"admin\\z{uuid.uuid4().hex[:12]}",
}


@pytest.fixture(scope="module")
def secure() -> Iterator[services.ActiveMQBroker]:
    have = (services.ACTIVEMQ_HOME / "bin" / "activemq.jar").exists()
    require(have and bool(shutil.which("java")), "ActiveMQ (apt-get install activemq)")
    require(bool(shutil.which("keytool")), "keytool (apt-get install default-jre-headless)")
    directory = Path(tempfile.mkdtemp(prefix="machinedb-activemq-secure-"))
    broker = services.ActiveMQBroker(directory, secure=True, passwords=PASSWORDS)
    broker.start()
    yield broker
    broker.destroy()


@pytest.fixture
def topic() -> str:
    return f"/topic/VirtualTopic.sec{uuid.uuid4().hex[:10]}"


def consumer_queue(topic: str, name: str) -> str:
    return f"/queue/Consumer.{name}.{topic.removeprefix('/topic/')}"


def stomp_url(broker: services.ActiveMQBroker, user: str, password: str | None = None) -> str:
    secret = quote(PASSWORDS[user] if password is None else password, safe="")
    return broker.ssl_url.replace("://", f"://{user}:{secret}@", 1)


def secret_forms() -> list[str]:
    """Every password as typed and as written in a URL."""
    return [form for pw in PASSWORDS.values() for form in {pw, quote(pw, safe="")}]


def assert_no_secret(text: str, where: str) -> None:
    for form in secret_forms():
        assert form not in text, f"a password appears in {where}"


@dataclass
class Client(stomp.ConnectionListener):  # type: ignore[misc]
    """A STOMP client that records what the broker answers (never raises from callbacks)."""

    connected: threading.Event = field(default_factory=threading.Event)
    errors: list[dict[str, str]] = field(default_factory=list)
    receipts: set[str] = field(default_factory=set)
    messages: list[tuple[dict[str, str], str]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    conn: Any = None

    def on_connected(self, frame: Any) -> None:
        self.connected.set()

    def on_error(self, frame: Any) -> None:
        self.errors.append(dict(frame.headers))

    def on_receipt(self, frame: Any) -> None:
        self.receipts.add(frame.headers["receipt-id"])

    def on_message(self, frame: Any) -> None:
        self.messages.append((dict(frame.headers), frame.body))

    def on_disconnected(self) -> None:
        self.closed.set()

    def answered(self, receipt: str) -> str:
        """'receipt' or 'error' once the broker answered the frame with ``receipt``."""

        def answer() -> str | None:
            if receipt in self.receipts:
                return "receipt"
            if any(e.get("receipt-id") == receipt for e in self.errors):
                return "error"
            return None

        return str(wait_for(answer, deadline=DEADLINE, what=f"an answer to {receipt}"))

    def send(self, destination: str, body: str = "{}", **headers: str) -> str:
        receipt = uuid.uuid4().hex
        self.conn.send(
            destination, body, headers={"persistent": "true", "receipt": receipt, **headers}
        )
        return self.answered(receipt)

    def subscribe(self, destination: str) -> str:
        receipt = uuid.uuid4().hex
        self.conn.subscribe(
            destination, id=uuid.uuid4().hex, ack="auto", headers={"receipt": receipt}
        )
        return self.answered(receipt)


@contextlib.contextmanager
def client(
    broker: services.ActiveMQBroker,
    user: str | None,
    password: str | None = None,
    *,
    tls: bool = False,
    ca: Path | None = None,
    expect_connected: bool = True,
) -> Iterator[Client]:
    port = broker.ssl_port if tls else broker.port
    conn = stomp.Connection12([("127.0.0.1", port)], reconnect_attempts_max=1, timeout=5)
    if tls:
        conn.set_ssl(for_hosts=[("127.0.0.1", port)], ca_certs=str(ca) if ca else None)
    listener = Client(conn=conn)
    conn.set_listener("test", listener)
    if user is not None and password is None:
        password = PASSWORDS[user]
    try:
        conn.connect(user, password, wait=False)
        if expect_connected:
            wait_for(
                lambda: listener.connected.is_set() or listener.errors,
                deadline=DEADLINE,
                what="CONNECTED",
            )
            assert listener.connected.is_set(), f"refused: {listener.errors}"
        yield listener
    finally:
        with contextlib.suppress(Exception):
            if conn.is_connected():
                conn.disconnect()
            else:
                conn.transport.stop()


# ---------------------------------------------------------------- the broker itself


def listen_addresses(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp*) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    assert found, f"nothing listens on {port}"
    return found


def test_passwords_stay_off_the_command_line_and_plain_stomp_is_loopback(
    secure: services.ActiveMQBroker,
) -> None:
    pid = secure.pid()
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert_no_secret(cmdline, "the broker's command line")
    assert secure.keystore is not None
    assert secure.keystore.password not in cmdline
    credentials = secure.conf / "credentials.properties"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert listen_addresses(secure.port) <= {"0100007F", "0000000000000000FFFF00000100007F"}
    config = (services.ACTIVEMQ_CONF / "activemq-secure.xml").read_text()
    assert "stomp://${machinedb.stomp.bind:127.0.0.1}:" in config
    assert_no_secret(secure.log_file.read_text(errors="replace"), "the broker log")


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("relay", "wrong"), ("relay", PASSWORDS["generator"]), ("nobody", "x")],
    ids=["anonymous", "wrong-password", "other-users-password", "unknown-user"],
)
@pytest.mark.parametrize("tls", [False, True], ids=["stomp", "stomp+ssl"])
def test_bad_credentials_are_refused(
    secure: services.ActiveMQBroker, user: str | None, password: str | None, tls: bool
) -> None:
    assert secure.keystore is not None
    with client(
        secure, user, password, tls=tls, ca=secure.keystore.cert_pem, expect_connected=False
    ) as c:
        wait_for(lambda: c.errors or c.connected.is_set(), deadline=DEADLINE, what="an answer")
        assert not c.connected.is_set()
        assert "password is invalid" in c.errors[0].get("message", ""), c.errors


@pytest.mark.parametrize(
    ("user", "action", "where", "allowed"),
    [
        ("relay", "send", "topic", True),
        ("generator", "send", "topic", False),
        ("generator", "send", "queue", False),  # cannot forge into its own queue
        ("relay", "send", "queue", False),
        ("admin", "send", "queue", True),
        ("generator", "subscribe", "queue", True),
        ("relay", "subscribe", "queue", False),
        ("generator", "subscribe", "topic", False),
        ("generator", "send", "other", False),
        ("relay", "send", "other", False),
    ],
)
def test_authorization_map(
    secure: services.ActiveMQBroker, topic: str, user: str, action: str, where: str, allowed: bool
) -> None:
    destination = {
        "topic": topic,
        "queue": consumer_queue(topic, "acl"),
        "other": f"/queue/unrelated{uuid.uuid4().hex[:8]}",
    }[where]
    with client(secure, user) as c:
        answer = c.send(destination) if action == "send" else c.subscribe(destination)
        assert answer == ("receipt" if allowed else "error"), c.errors
        if not allowed:
            assert "not authorized" in c.errors[-1].get("message", ""), c.errors


def test_generator_receives_what_the_relay_published(
    secure: services.ActiveMQBroker, topic: str
) -> None:
    with client(secure, "generator") as gen, client(secure, "relay") as relay:
        assert gen.subscribe(consumer_queue(topic, "dhcp1")) == "receipt"
        assert relay.send(topic, '{"table": "host"}', table="host", op="INSERT") == "receipt"
        wait_for(lambda: gen.messages, deadline=DEADLINE, what="the relayed message")
        headers, body = gen.messages[0]
        assert json.loads(body) == {"table": "host"}
        assert headers.get("JMSXUserID") == "relay"  # the broker stamps who sent it


# ---------------------------------------------------------------- TLS


def test_tls_exchange_with_the_exported_certificate(
    secure: services.ActiveMQBroker, topic: str
) -> None:
    assert secure.keystore is not None
    ca = secure.keystore.cert_pem
    assert ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    with (
        client(secure, "generator", tls=True, ca=ca) as gen,
        client(secure, "relay", tls=True, ca=ca) as relay,
    ):
        assert gen.subscribe(consumer_queue(topic, "tls")) == "receipt"
        assert relay.send(topic, "over tls", table="host") == "receipt"
        wait_for(lambda: gen.messages, deadline=DEADLINE, what="a message over TLS")
        assert gen.messages[0][1] == "over tls"


@pytest.mark.parametrize("which", ["system-ca", "wrong-ca"])
def test_tls_client_without_the_right_ca_is_refused(
    secure: services.ActiveMQBroker, tmp_path: Path, which: str
) -> None:
    ca = services.make_keystore(tmp_path, name="other").cert_pem if which == "wrong-ca" else None
    with pytest.raises(stomp.exception.ConnectFailedException):  # noqa: SIM117
        with client(secure, "relay", tls=True, ca=ca, expect_connected=False):
            pass


# ---------------------------------------------------------------- the real commands

SUBNET = "INSERT INTO subnet (name, network, gateway) VALUES ('sec', '10.77.0.0/24', '10.77.0.1')"
HOST = "INSERT INTO host (hostname) VALUES (%s) RETURNING id"
INTERFACE = "INSERT INTO interface (host_id, mac, ip) VALUES (%s, %s, %s)"


class Command:
    """A console script as a subprocess; its stdout and stderr captured in files."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for cmd in started:
        cmd.stop()
    for cmd in started:
        print(f"---- {cmd.log.name} ----\n{cmd.output()[-4000:]}")


def test_relay_and_generator_over_tls_end_to_end_and_forged_message(
    secure: services.ActiveMQBroker,
    db_url: str,
    tmp_path: Path,
    topic: str,
    commands: list[Command],
) -> None:
    assert secure.keystore is not None
    ca = str(secure.keystore.cert_pem)
    name = f"sec{uuid.uuid4().hex[:6]}"
    output = tmp_path / "dhcpd.conf"
    metrics_port, relay_metrics_port = services.free_port(), services.free_port()
    url_file = tmp_path / "relay-stomp-url"
    url_file.write_text(stomp_url(secure, "relay"))
    url_file.chmod(0o600)
    base = {"DATABASE_URL": db_url, "CDC_DESTINATION": topic}
    generator = Command(
        [str(GENERATOR), "--log-level", "DEBUG", "--format", "isc", "--output", str(output),
         "--no-syntax-check", "--consumer", name, "--window", "0.2",
         "--metrics-port", str(metrics_port)],
        {**base, "STOMP_URL": stomp_url(secure, "generator"), "SSL_CA_FILE": ca},
        tmp_path / "generator.log",
    )  # fmt: skip
    commands.append(generator)
    wait_for(lambda: "subscribed to" in generator.output(), deadline=E2E_DEADLINE, what="subscribe")
    relay = Command(
        [
            str(RELAY),
            "--log-level",
            "DEBUG",
            "--ssl-ca-file",
            ca,
            "--fallback-interval",
            "5",
            "--metrics-port",
            str(relay_metrics_port),
        ],
        {**base, "STOMP_URL_FILE": str(url_file)},
        tmp_path / "relay.log",
    )
    commands.append(relay)

    mac = "52:54:00:77:00:10"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SUBNET)
        row = conn.execute(HOST, [name]).fetchone()
        assert row is not None
        conn.execute(INTERFACE, [row[0], mac, "10.77.0.10"])
    wait_for(
        lambda: output.exists() and mac in output.read_text(),
        deadline=E2E_DEADLINE,
        what="the new host in the generator's output",
    )
    assert f"host {name}" in output.read_text()

    # A forged change, published by a user allowed to write the queue (admin), claiming a
    # host the database does not have. It may ring the doorbell; it must not add config.
    def count(sample: str) -> float:
        return metric(metrics_port, sample) or 0.0

    relevant = 'dhcp_generator_messages_total{kind="relevant"}'
    renders = 'dhcp_generator_renders_total{result="unchanged"}'
    wait_for(lambda: count("dhcp_generator_pending_messages") == 0, what="pending acked")
    before = (count(relevant), count(renders))
    forged = {
        "id": 999999,
        "table": "host",
        "op": "INSERT",
        "pk": {"id": 4242},
        "before": None,
        "after": {"id": 4242, "hostname": "forged-evil", "mac": "52:54:00:66:66:66",
                  "ip": "10.77.0.66", "enabled": True},
        "txid": 1,
        "captured_at": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    with client(secure, "admin") as admin:
        headers = {"table": "host", "op": "INSERT", "event-id": "999999"}
        body = json.dumps(forged)
        assert admin.send(consumer_queue(topic, name), body, **headers) == "receipt"
        assert admin.send(consumer_queue(topic, name), "}{ not json", **headers) == "receipt"
    wait_for(lambda: count(relevant) >= before[0] + 2, what="the forged messages received")
    wait_for(lambda: count("dhcp_generator_pending_messages") == 0, what="forged messages acked")
    assert count(renders) >= before[1] + 1  # a re-render, with unchanged bytes

    text = output.read_text()
    assert "forged-evil" not in text and "52:54:00:66:66:66" not in text
    fresh = tmp_path / "fresh.conf"
    once = subprocess.run(
        [str(GENERATOR), "--once", "--format", "isc", "--output", str(fresh), "--no-syntax-check"],
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert once.returncode == 0, once.stderr
    assert output.read_bytes() == fresh.read_bytes()

    for port in (metrics_port, relay_metrics_port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            assert_no_secret(page.read().decode(), f"the metrics on port {port}")
    assert relay.stop() == 0
    assert generator.stop() == 0
    assert "connected to broker" in relay.output()
    assert_no_secret(relay.output(), "the relay's log")
    assert_no_secret(generator.output(), "the generator's log")
    assert_no_secret(once.stdout + once.stderr, "dhcp-generator --once")


@pytest.mark.parametrize("command", ["relay", "generator"])
def test_wrong_password_is_reported_without_the_password(
    secure: services.ActiveMQBroker, db_url: str, tmp_path: Path, command: str
) -> None:
    """At start-up, a wrong password (another user's) makes the command exit non-zero
    with a one-line reason that shows no password."""
    assert secure.keystore is not None
    url = stomp_url(secure, command, PASSWORDS["admin"])
    env = {
        "DATABASE_URL": db_url,
        "STOMP_URL": url,
        "SSL_CERT_FILE": str(secure.keystore.cert_pem),
        "CDC_DESTINATION": f"/topic/VirtualTopic.sec{uuid.uuid4().hex[:8]}",
    }
    argv = [str(RELAY if command == "relay" else GENERATOR), "--log-level", "DEBUG"]
    if command == "generator":
        argv += ["--output", str(tmp_path / "out.conf"), "--no-syntax-check"]
    cmd = Command(argv, env, tmp_path / f"{command}.log")
    try:
        wait_for(lambda: cmd.proc.poll() is not None, deadline=E2E_DEADLINE, what="the exit")
    finally:
        cmd.stop()
    assert cmd.proc.returncode not in (0, None)
    last = cmd.output().strip().splitlines()[-1]
    assert "password is invalid" in last, cmd.output()
    assert_no_secret(cmd.output(), f"{command}'s log")


@pytest.mark.parametrize("command", [RELAY, GENERATOR], ids=["relay", "generator"])
def test_help_never_shows_a_password(secure: services.ActiveMQBroker, command: Path) -> None:
    env = {
        **os.environ,
        "STOMP_URL": stomp_url(secure, "relay"),
        "DATABASE_URL": "postgresql://x:pw@h/db",
    }
    done = subprocess.run(
        [str(command), "--help"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert_no_secret(done.stdout + done.stderr, f"{command.name} --help")


# ---------------------------------------------------------------- CA file and URL file


def test_generator_takes_a_ca_file(
    secure: services.ActiveMQBroker, db_url: str, tmp_path: Path, commands: list[Command]
) -> None:
    assert secure.keystore is not None
    generator = Command(
        [str(GENERATOR), "--ssl-ca-file", str(secure.keystore.cert_pem), "--output",
         str(tmp_path / "out.conf"), "--no-syntax-check", "--consumer", "cafile"],
        {"DATABASE_URL": db_url, "STOMP_URL": stomp_url(secure, "generator"),
         "CDC_DESTINATION": f"/topic/VirtualTopic.sec{uuid.uuid4().hex[:8]}"},
        tmp_path / "generator.log",
    )  # fmt: skip
    commands.append(generator)
    wait_for(
        lambda: generator.proc.poll() is not None or "subscribed to" in generator.output(),
        deadline=E2E_DEADLINE,
        what="the subscription",
    )
    assert "subscribed to" in generator.output()


def test_generator_reads_stomp_url_file(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("stomp+ssl://generator:s3cret@127.0.0.1:61614\n")
    args = generator_cli.build_parser().parse_args(["--output", str(tmp_path / "out.conf")])
    env = {"DATABASE_URL": "postgresql://x@h/db", "STOMP_URL_FILE": str(url_file)}
    config = generator_cli.load_settings(args, env)
    assert config.stomp_url == "stomp+ssl://generator:s3cret@127.0.0.1:61614"


class _NoRelayPassword(services.ActiveMQBroker):
    """A secured broker whose credentials.properties lacks the relay's password."""

    def _prepare_secure(self) -> list[str]:
        options = super()._prepare_secure()
        credentials = self.conf / "credentials.properties"
        lines = credentials.read_text(encoding="latin-1").splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith("machinedb.relay.")]
        credentials.write_text("".join(kept), encoding="latin-1")
        return options


def test_broker_refuses_to_start_without_a_password(secure: services.ActiveMQBroker) -> None:
    """activemq-secure.xml has no default password: a missing one stops the start."""
    broker = _NoRelayPassword(
        Path(tempfile.mkdtemp(prefix="machinedb-activemq-nopw-")), secure=True
    )
    try:
        with pytest.raises(services.ServiceError, match="did not start"):
            broker.start()
        console = (broker.directory / "console.log").read_text(errors="replace")
        assert "Could not resolve placeholder 'machinedb.relay.password'" in console
    finally:
        broker.destroy()
