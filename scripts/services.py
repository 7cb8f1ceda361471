#!/usr/bin/env python3
"""Start and stop throwaway PostgreSQL and ActiveMQ instances for tests and local runs.

Each instance lives in a directory of its own, on a free port, and works both as root
(PostgreSQL runs through ``runuser -u postgres``) and as a normal user.

    scripts/services.py start all --dir DIR     # prints DATABASE_URL= and STOMP_URL= lines
    scripts/services.py stop all --dir DIR
    scripts/services.py start pair --dir DIR    # an ActiveMQ shared-store master/slave pair:
                                                # STOMP_URL= lists both brokers

``start`` also creates the database ``machinedb`` that DATABASE_URL names and migrates
it to head (``--no-migrate``: leave it as it is); stdout carries only the KEY=value
lines, stderr says what was done to the database.

The same classes are imported by the test fixtures (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.sql
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

REPO = Path(__file__).resolve().parent.parent
ACTIVEMQ_CONF = REPO / "deploy" / "activemq"
ACTIVEMQ_HOME = Path("/usr/share/activemq")
PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15")]
PG_SUPERUSER = "postgres"
START_DEADLINE = 90.0  # seconds; ActiveMQ needs ~15-20 s on a 2-core machine
STOP_DEADLINE = 30.0  # seconds
SECURE_USERS = ("relay", "generator", "admin")  # users of activemq-secure.xml
CERT_VALIDITY = 30  # days; test and local certificates only


class ServiceError(RuntimeError):
    """A service could not be started or stopped; the message says why."""


def alembic_config(database_url: str) -> Config:
    """The repository's alembic configuration, pointed at ``database_url``."""
    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("script_location", str(REPO / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def migrate(database_url: str) -> None:
    """Apply every migration (``alembic upgrade head``) to the database."""
    command.upgrade(alembic_config(database_url), "head")


# Listening ports are picked below the kernel's ephemeral range. A port from bind(0) is
# one the kernel also hands to outgoing connections, so between the pick and the
# daemon's own bind any connection on the machine may take it ("Address already in
# use", seen under parallel tests). Each process picks in its own band (a pytest-xdist
# worker by its number, anything else by its pid), in order, skipping ports in use.
PORT_BASE = 20000
PORT_BAND = 400  # ports per process
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_picked: list[int] = []  # this process's picks so far


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _band_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    return int(worker[2:]) + 1 if worker[2:].isdigit() else os.getpid()


def _in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104  (a probe, closed at once: as a listener binds)
        except OSError:
            return True
    return False


def free_port() -> int:
    """A TCP port nothing listens on, outside the ephemeral range (see PORT_BASE)."""
    bands = max(1, (_ephemeral_low() - PORT_BASE) // PORT_BAND)
    first = PORT_BASE + (_band_index() % bands) * PORT_BAND
    start = len(_picked)
    for step in range(PORT_BAND):
        port = first + (start + step) % PORT_BAND
        if port not in _picked and not _in_use(port):
            _picked.append(port)
            return port
    # the band is full: fall back to the kernel's choice
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, deadline: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise ServiceError(f"port {port} did not open within {deadline:.0f} s")


def pg_bin() -> Path:
    for cand in PG_BIN_CANDIDATES:
        if (cand / "initdb").exists():
            return cand
    raise ServiceError("PostgreSQL server binaries not found (apt-get install postgresql)")


def _as_owner(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_SUPERUSER, "--", *cmd]
    return cmd


class PostgresCluster:
    """A PostgreSQL cluster in ``directory`` listening on 127.0.0.1:``port``."""

    def __init__(self, directory: Path, port: int | None = None, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.port_file = self.directory / "port"
        self.fsync = fsync
        if port is None and self.port_file.exists():
            port = int(self.port_file.read_text())
        self.port = port or free_port()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_SUPERUSER)
            # the postgres user must reach the directory through every parent
            for parent in [self.directory, *self.directory.parents]:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if mode & 0o001 == 0:
                    parent.chmod(mode | 0o001)
            for path in (self.directory, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _as_owner(
                [
                    str(pg_bin() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.port_file.write_text(str(self.port))

    def start(self) -> None:
        self.init()
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            f"-c max_connections=200 -c fsync={'on' if self.fsync else 'off'} "
            "-c shared_buffers=128MB"
        )
        proc = subprocess.run(
            _as_owner(
                [
                    str(pg_bin() / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_file),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=False,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ServiceError(f"PostgreSQL did not start: {proc.stderr.strip()} {tail}")
        wait_for_port(self.port, deadline=START_DEADLINE)

    def stop(self, mode: str = "fast") -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        subprocess.run(
            _as_owner(
                [
                    str(pg_bin() / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    str(int(STOP_DEADLINE)),
                    "stop",
                ]
            ),
            capture_output=True,
            check=False,
        )

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True, kw_only=True)
class Keystore:
    """A broker key and self-signed certificate: PKCS12 for ActiveMQ, PEM for clients."""

    path: Path  # PKCS12 keystore
    password: str
    cert_pem: Path  # the certificate, which clients use as their CA file


def make_keystore(
    directory: Path,
    *,
    password: str | None = None,
    hostnames: tuple[str, ...] = ("localhost",),
    addresses: tuple[str, ...] = ("127.0.0.1",),
    name: str = "broker",
) -> Keystore:
    """Create ``DIR/<name>.p12`` (a new EC key, self-signed for ``hostnames`` and
    ``addresses``) with ``keytool``, and export its certificate to ``DIR/<name>.pem``.

    The password reaches keytool through its environment, never its command line.
    """
    keytool = shutil.which("keytool")
    if keytool is None:
        raise ServiceError("keytool not found (apt-get install default-jre-headless)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(18)
    store, pem = directory / f"{name}.p12", directory / f"{name}.pem"
    store.unlink(missing_ok=True)
    san = ",".join([*(f"dns:{h}" for h in hostnames), *(f"ip:{a}" for a in addresses)])
    env = {**os.environ, "MACHINEDB_STOREPASS": password}
    common = [
        "-storetype",
        "PKCS12",
        "-keystore",
        str(store),
        "-storepass:env",
        "MACHINEDB_STOREPASS",
    ]
    steps = [
        [keytool, "-genkeypair", "-alias", name, "-keyalg", "EC", "-groupname", "secp256r1",
         "-sigalg", "SHA256withECDSA", "-validity", str(CERT_VALIDITY),
         "-dname", f"CN={hostnames[0] if hostnames else name}, O=machinedb",
         "-ext", f"SAN={san}", "-keypass:env", "MACHINEDB_STOREPASS", *common],
        [keytool, "-exportcert", "-rfc", "-alias", name, "-file", str(pem), *common],
    ]  # fmt: skip
    for cmd in steps:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(f"keytool {cmd[1]} failed: {done.stdout}{done.stderr}".strip())
    store.chmod(0o600)
    return Keystore(path=store, password=password, cert_pem=pem)


def _properties_value(value: str) -> str:
    """``value`` escaped for a java.util.Properties file."""
    if "${" in value:  # Spring would read it as a placeholder
        raise ServiceError("a broker password must not contain '${'")
    out = []
    for i, char in enumerate(value):
        if char == "\\":
            out.append("\\\\")
        elif char in "\n\r\t\f":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}[char])
        elif (char == " " and i == 0) or char in "#!=:":
            out.append("\\" + char)
        elif not " " <= char <= "~":
            units = char.encode("utf-16-be")  # astral characters become surrogate pairs
            out.extend(f"\\u{units[k] << 8 | units[k + 1]:04x}" for k in range(0, len(units), 2))
        else:
            out.append(char)
    return "".join(out)


class ActiveMQBroker:
    """An ActiveMQ Classic broker with a STOMP connector on 127.0.0.1:``port``.

    ``secure=True`` runs deploy/activemq/activemq-secure.xml instead: users ``relay``,
    ``generator`` and ``admin`` (``passwords``, random ones when missing), an
    authorization map, and a STOMP+TLS connector on 127.0.0.1:``ssl_port`` with
    ``keystore`` (a fresh self-signed one when None). The passwords go to
    ``conf/credentials.properties`` (mode 0600), never onto the JVM's command line.

    ``queues``: consumer names whose queues on the change topic its copy of the config
    declares besides the shipped one (``dhcp``), as a deployment declares the queue of a
    consumer that renders nothing from the database and must not miss a message (an
    audit reader); a generator needs none (docs/deployment.md, "Consumer queues").
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        secure: bool = False,
        passwords: Mapping[str, str] | None = None,
        keystore: Keystore | None = None,
        ssl_port: int | None = None,
        queues: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.queues = tuple(queues)
        self.conf = self.directory / "conf"
        self.data = self.directory / "data"
        self.pid_file = self.directory / "activemq.pid"
        self.port_file = self.directory / "port"
        if port is None and self.port_file.exists():
            port = int(self.port_file.read_text())
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self.secure = secure
        self.passwords = {u: secrets.token_urlsafe(18) for u in SECURE_USERS} if secure else {}
        self.passwords.update(passwords or {})
        self.keystore = keystore
        ssl_port_file = self.directory / "ssl_port"
        if secure and ssl_port is None and ssl_port_file.exists():
            ssl_port = int(ssl_port_file.read_text())
        self.ssl_port = (ssl_port or free_port()) if secure else None

    @property
    def url(self) -> str:
        return f"stomp://127.0.0.1:{self.port}"

    @property
    def ssl_url(self) -> str:
        """The STOMP+TLS connector (secure brokers only); add ``user:password@`` to use it."""
        if self.ssl_port is None:
            raise ServiceError("this broker has no TLS connector (secure=False)")
        return f"stomp+ssl://127.0.0.1:{self.ssl_port}"

    @property
    def config_name(self) -> str:
        return "activemq-secure.xml" if self.secure else "activemq.xml"

    def _prepare_secure(self) -> list[str]:
        """Write the keystore and credentials.properties; return the -D options (no secrets)."""
        if self.ssl_port is None:
            return []
        if self.keystore is None:
            self.keystore = make_keystore(self.directory / "tls")
        lines = [
            f"machinedb.{user}.password={_properties_value(pw)}"
            for user, pw in sorted(self.passwords.items())
        ]
        lines.append(f"machinedb.ssl.keystore.password={_properties_value(self.keystore.password)}")
        credentials = self.conf / "credentials.properties"
        credentials.unlink(missing_ok=True)
        fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="latin-1") as out:
            out.write("\n".join(lines) + "\n")
        (self.directory / "ssl_port").write_text(str(self.ssl_port))
        return [
            "-Dmachinedb.stomps.bind=127.0.0.1",
            f"-Dmachinedb.stomps.port={self.ssl_port}",
            f"-Dmachinedb.ssl.keystore={self.keystore.path}",
        ]

    @property
    def log_file(self) -> Path:
        return self.data / "activemq.log"

    def start(self) -> None:
        proc = self._launch()
        try:
            wait_for_port(self.port, deadline=START_DEADLINE, proc=proc)
            if self.ssl_port is not None:
                wait_for_port(self.ssl_port, deadline=START_DEADLINE, proc=proc)
        except ServiceError as exc:
            self.stop()
            tail = (self.directory / "console.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"ActiveMQ did not start: {exc}\n{tail}") from exc

    def _extra_options(self) -> list[str]:
        """More -D options for the JVM (a pair member adds its shared store)."""
        return []

    def _launch(self) -> subprocess.Popen[bytes]:
        """Start the broker's JVM and return at once (``start`` waits for its ports)."""
        jar = ACTIVEMQ_HOME / "bin" / "activemq.jar"
        if not jar.exists():
            raise ServiceError(f"{jar} not found (apt-get install activemq)")
        java = shutil.which("java")
        if java is None:
            raise ServiceError("java not found (apt-get install default-jre-headless)")
        for sub in (self.conf, self.data, self.directory / "tmp"):
            sub.mkdir(parents=True, exist_ok=True)
        for name in (self.config_name, "log4j.properties"):
            shutil.copy(ACTIVEMQ_CONF / name, self.conf / name)
        declare_consumer_queues(self.conf / self.config_name, self.queues)
        self.port_file.write_text(str(self.port))
        secure_options = self._prepare_secure()
        cmd = [
            java,
            "-Xms64m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dactivemq.home={ACTIVEMQ_HOME}",
            f"-Dactivemq.base={self.directory}",
            f"-Dactivemq.conf={self.conf}",
            f"-Dactivemq.data={self.data}",
            f"-Djava.io.tmpdir={self.directory / 'tmp'}",
            f"-Dlog4j.configuration=file:{self.conf / 'log4j.properties'}",
            "-Dmachinedb.stomp.bind=127.0.0.1",
            f"-Dmachinedb.stomp.port={self.port}",
            *secure_options,
            *self._extra_options(),
            "-jar",
            str(jar),
            "start",
            f"xbean:file:{self.conf / self.config_name}",
        ]
        with open(self.directory / "console.log", "ab") as console:
            proc = subprocess.Popen(
                cmd,
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        self._proc = proc  # reaped in stop(), so the JVM never outlives its Popen silently
        return proc

    def pid(self) -> int | None:
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self, *, kill: bool = False) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        end = time.monotonic() + STOP_DEADLINE
        while time.monotonic() < end:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                finished = 0 if self._alive(pid) else pid
            if finished == pid:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(STOP_DEADLINE)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.directory, ignore_errors=True)


SLAVE_MODE = "This broker is now in slave mode"  # logged by a broker waiting for the lock


def declare_consumer_queues(config: Path, consumers: Sequence[str]) -> None:
    """Add each consumer's ``Consumer.<name>.VirtualTopic.machinedb.changes`` to the
    ``<destinations>`` of a copy of a shipped broker config."""
    if not consumers:
        return
    marker = "    </destinations>\n"
    text = config.read_text()
    if text.count(marker) != 1:
        raise ServiceError(f"{config}: no single </destinations> to add queues to")
    queues = "".join(
        f'      <queue physicalName="Consumer.{name}.VirtualTopic.machinedb.changes"/>\n'
        for name in consumers
    )
    config.write_text(text.replace(marker, queues + marker))


class PairMember(ActiveMQBroker):
    """One broker of a shared-store master/slave pair: deploy/activemq/activemq-pair.xml
    with its own STOMP port and data directory, and the pair's KahaDB directory ``store``."""

    def __init__(
        self, directory: Path, port: int | None = None, *, store: Path, queues: Sequence[str] = ()
    ) -> None:
        super().__init__(directory, port, queues=queues)
        self.store = Path(store)

    @property
    def config_name(self) -> str:
        return "activemq-pair.xml"

    def _extra_options(self) -> list[str]:
        return [f"-Dmachinedb.kahadb={self.store}"]

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def accepts(self) -> bool:
        """Is this member's STOMP port open (it is the master)?"""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return True
        return False

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the JVM without waiting: a slave opens its port only when it takes over."""
        return self._launch()

    def is_slave(self, *, since: int = 0) -> bool:
        """Has it logged (after ``since`` characters of its log) that it waits for the lock?"""
        return SLAVE_MODE in self.log_text()[since:]


class ActiveMQPair:
    """Two ActiveMQ brokers sharing one KahaDB directory (shared-store master/slave):
    whichever takes the store's lock first is the master, the other waits as its slave
    and takes over when the master dies. Clients use ``url``, which lists both.
    ``queues``: as for ``ActiveMQBroker``, declared by both."""

    def __init__(
        self,
        directory: Path,
        ports: tuple[int | None, int | None] = (None, None),
        *,
        queues: Sequence[str] = (),
    ):
        self.directory = Path(directory)
        self.store = self.directory / "shared" / "kahadb"
        self.members = (
            PairMember(self.directory / "a", ports[0], store=self.store, queues=queues),
            PairMember(self.directory / "b", ports[1], store=self.store, queues=queues),
        )

    @property
    def url(self) -> str:
        return ",".join(member.url for member in self.members)

    def master(self) -> PairMember | None:
        """The member whose STOMP port accepts connections, if any."""
        return next((member for member in self.members if member.accepts()), None)

    def start(self) -> None:
        """Start both JVMs at once; return when one accepts connections (the master) and
        the other has logged that it waits for the lock (the slave)."""
        self.store.mkdir(parents=True, exist_ok=True)
        logged = [len(member.log_text()) for member in self.members]
        procs = [member.launch() for member in self.members]
        end = time.monotonic() + START_DEADLINE
        while True:
            master = self.master()
            slaves = [m for m, n in zip(self.members, logged, strict=True) if m.is_slave(since=n)]
            if master is not None and [m for m in slaves if m is not master]:
                return
            if time.monotonic() > end or any(proc.poll() is not None for proc in procs):
                self.stop()
                tails = "\n".join(m.log_text()[-1500:] for m in self.members)
                raise ServiceError(f"the ActiveMQ pair did not start as master and slave:\n{tails}")
            time.sleep(0.2)

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def destroy(self) -> None:
        for member in self.members:
            member.stop(kill=True)
        shutil.rmtree(self.directory, ignore_errors=True)


RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_START_DEADLINE = 120.0  # seconds; a node is ready in ~5-15 s on 2 busy cores
RABBITMQ_USER = "guest"  # RabbitMQ's default user, allowed from 127.0.0.1 only
RABBITMQ_PASSWORD = "guest"  # noqa: S105  (the well-known default, loopback only)


def have_rabbitmq() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists()


class RabbitMQNode:
    """A RabbitMQ node with its STOMP plugin on 127.0.0.1:``port``, all its state in
    ``directory``, and its own node name, AMQP and distribution ports.

    Nodes of one ``RabbitMQCluster`` share an epmd port and a home (the Erlang cookie);
    a lone node gets its own. The node runs as a process group of its own: ``stop``
    signals the group (SIGTERM: RabbitMQ shuts down cleanly; ``kill``: SIGKILL).
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        name: str | None = None,
        home: Path | None = None,
        epmd_port: int | None = None,
        peers: tuple[str, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.port_file = self.directory / "ports"
        saved = self.port_file.read_text().split() if self.port_file.exists() else []
        self._own_epmd = epmd_port is None
        if saved:  # a node started here before: same name (its data), same ports
            port, node_port, dist_port, saved_epmd = (int(x) for x in saved[:4])
            name, epmd_port = name or saved[4], epmd_port or saved_epmd
        else:
            node_port, dist_port = free_port(), free_port()
        self.port = port or free_port()
        self.node_port, self.dist_port = node_port, dist_port
        self.epmd_port = epmd_port or free_port()
        self.name = name or f"machinedb-{secrets.token_hex(4)}@localhost"
        self.home = Path(home or self.directory)
        self.peers = peers  # node names to join (classic peer discovery)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"stomp://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "console.log"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_NODE_PORT": str(self.node_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _write_config(self) -> None:
        for sub in ("mnesia", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listeners.tcp.1 = 127.0.0.1:{self.node_port}",
            f"stomp.listeners.tcp.1 = 127.0.0.1:{self.port}",
            "log.console = false",
        ]
        if self.peers:
            lines += [
                "cluster_formation.peer_discovery_backend = classic_config",
                *(f"cluster_formation.classic_config.nodes.{i} = {peer}"
                  for i, peer in enumerate(self.peers, 1)),
            ]  # fmt: skip
        (self.directory / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.directory / "enabled_plugins").write_text("[rabbitmq_stomp].\n")
        self.port_file.write_text(
            f"{self.port} {self.node_port} {self.dist_port} {self.epmd_port} {self.name}"
        )

    def start(self, *, wait: bool = True) -> None:
        server = RABBITMQ_BIN / "rabbitmq-server"
        if not server.exists():
            raise ServiceError(f"{server} not found (apt-get install rabbitmq-server)")
        self._write_config()
        with open(self.log_file, "ab") as console:
            self._proc = subprocess.Popen(
                [str(server)],
                env=self.environment(),
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (self.directory / "rabbitmq.pid").write_text(str(self._proc.pid))
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        try:
            wait_for_port(self.port, deadline=RABBITMQ_START_DEADLINE, proc=self._proc)
        except ServiceError as exc:
            self.stop(kill=True)
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise ServiceError(f"RabbitMQ {self.name} did not start: {exc}\n{tail}") from exc

    def declare_queues(self, queues: Sequence[str], *, quorum: bool = False) -> None:
        """Declare each consumer queue (``/queue/Consumer.<name>.VirtualTopic.X``) as a
        durable queue bound to its topic, as a generator's first SUBSCRIBE would: RabbitMQ
        drops what it is sent while no queue is bound."""
        import stomp  # noqa: PLC0415  (the scripts need it only for RabbitMQ)

        from machinedb import broker_profile  # noqa: PLC0415

        conn = stomp.Connection12([("127.0.0.1", self.port)], vhost="/")
        conn.connect(RABBITMQ_USER, RABBITMQ_PASSWORD, wait=True)
        try:
            for n, queue in enumerate(queues):
                topic, name = broker_profile.split_queue(queue)
                headers = broker_profile.declare_headers(name, quorum=quorum)
                conn.subscribe(topic, id=f"declare-{n}", ack="client-individual", headers=headers)
                conn.unsubscribe(id=f"declare-{n}")
        finally:
            conn.disconnect()  # DISCONNECT waits for its receipt: the SUBSCRIBEs are done

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n NODE ARGS``; its output, ServiceError when it fails."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ServiceError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}".strip())
        return done.stdout

    def pid(self) -> int | None:
        pid_file = self.directory / "rabbitmq.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self, *, kill: bool = False) -> None:
        """Stop the node's process group (and, for a lone node, its epmd)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
            end = time.monotonic() + STOP_DEADLINE
            while time.monotonic() < end and _group_alive(pid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.1)
            if _group_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(STOP_DEADLINE)
                self._proc = None
            (self.directory / "rabbitmq.pid").unlink(missing_ok=True)
        if self._own_epmd:
            stop_epmd(self.epmd_port)

    def restart(self) -> None:
        self.stop_node_only()
        self.start()

    def stop_node_only(self, *, kill: bool = False) -> None:
        """Stop the node but keep epmd (the node, or its cluster, starts again)."""
        own, self._own_epmd = self._own_epmd, False
        try:
            self.stop(kill=kill)
        finally:
            self._own_epmd = own

    def destroy(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of our own children count as gone once reaped; reap what we can
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_epmd(port: int) -> None:
    """Stop the epmd that nodes started on ``port`` (they start it and leave it running)."""
    epmd = shutil.which("epmd") or "/usr/bin/epmd"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [epmd, "-port", str(port), "-kill"], capture_output=True, timeout=10, check=False
        )


class RabbitMQCluster:
    """``size`` RabbitMQ nodes on this machine forming one cluster (classic peer
    discovery: the first node starts alone, the others join it on their first boot).

    ``url`` lists every node's STOMP port, as a failover STOMP_URL does.
    """

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = Path(directory)
        self.home = self.directory / "home"
        saved = self.directory / "cluster"  # tag and epmd port: start and stop agree
        if saved.exists():
            tag, epmd = saved.read_text().split()
            self.epmd_port = int(epmd)
        else:
            tag, self.epmd_port = secrets.token_hex(3), free_port()
            self.directory.mkdir(parents=True, exist_ok=True)
            saved.write_text(f"{tag} {self.epmd_port}")
        names = tuple(f"machinedb-{tag}-{i}@localhost" for i in range(1, size + 1))
        self.nodes = [
            RabbitMQNode(
                self.directory / f"node{i}",
                name=name,
                home=self.home,
                epmd_port=self.epmd_port,
                peers=names,
            )
            for i, name in enumerate(names, 1)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        try:
            self.nodes[0].start()
            for node in self.nodes[1:]:
                node.start(wait=False)
            for node in self.nodes[1:]:
                node.wait_ready()
        except ServiceError:
            self.stop()
            raise

    def members(self) -> set[str]:
        """The running nodes the first reachable node counts in its cluster."""
        for node in self.nodes:
            if node.pid() is None:
                continue
            out = node.ctl("cluster_status", "--formatter", "json")
            return set(json.loads(out).get("running_nodes", []))
        return set()

    def stop(self, *, kill: bool = False) -> None:
        for node in self.nodes:
            node.stop(kill=kill)
        stop_epmd(self.epmd_port)

    def destroy(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.directory, ignore_errors=True)


DATABASE = "machinedb"  # the database that ``start`` prepares and prints


def prepare_database(cluster: PostgresCluster, *, migrate_it: bool) -> str:
    """Create the database ``machinedb`` if missing and, with ``migrate_it``, migrate it
    to head; return one line for the operator saying where it stands."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
        existed = found.fetchone() is not None
        if not existed:
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(DATABASE))
            )
    url = cluster.url(DATABASE)
    if migrate_it:
        migrate(url)
    with psycopg.connect(url) as conn:
        version = None
        if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() != (None,):
            version = conn.execute("SELECT max(version_num) FROM alembic_version").fetchone()
    current = version[0] if version else None
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if current is None:
        state = "not migrated (alembic upgrade head)"
    elif current == head:
        state = f"migrated to {current} (head)"
    else:
        state = f"at revision {current}, head is {head} (alembic upgrade head)"
    return f"database {DATABASE} {'existed' if existed else 'created'}, {state}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument(
        "service", choices=["pg", "activemq", "all", "pair", "rabbitmq", "rabbitmq-cluster"]
    )
    parser.add_argument("--dir", required=True, type=Path, help="state directory")
    parser.add_argument("--pg-port", type=int, help="PostgreSQL port (default: a free one)")
    parser.add_argument("--stomp-port", type=int, help="STOMP port (default: a free one)")
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help=f"start: create the database {DATABASE} but do not migrate it",
    )
    args = parser.parse_args(argv)
    # the migrations import the package `migrations`: make the repository importable from
    # any working directory (alembic.ini's prepend_sys_path "." is the working directory)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    services: list[
        PostgresCluster | ActiveMQBroker | ActiveMQPair | RabbitMQNode | RabbitMQCluster
    ] = []
    if args.service in ("pg", "all"):
        services.append(PostgresCluster(args.dir / "pg", args.pg_port))
    if args.service in ("activemq", "all"):
        services.append(ActiveMQBroker(args.dir / "activemq", args.stomp_port))
    if args.service == "pair":  # an ActiveMQ shared-store master/slave pair
        services.append(ActiveMQPair(args.dir / "activemq-pair"))
    if args.service == "rabbitmq":  # one RabbitMQ node with the STOMP plugin
        services.append(RabbitMQNode(args.dir / "rabbitmq", args.stomp_port))
    if args.service == "rabbitmq-cluster":  # three nodes on this machine
        services.append(RabbitMQCluster(args.dir / "rabbitmq-cluster"))
    try:
        for svc in services:
            if args.action == "start":
                svc.start()
                if isinstance(svc, PostgresCluster):
                    done = prepare_database(svc, migrate_it=not args.no_migrate)
                    print(f"services: PostgreSQL on port {svc.port}: {done}", file=sys.stderr)
                    print(f"DATABASE_URL={svc.url(DATABASE)}", flush=True)
                else:
                    print(f"STOMP_URL={svc.url}", flush=True)
            else:
                svc.stop()
    except (
        ServiceError,
        subprocess.CalledProcessError,
        psycopg.Error,
        SQLAlchemyError,
        CommandError,
    ) as exc:
        print(f"services: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
