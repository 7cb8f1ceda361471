"""The soak's own world: PostgreSQL, a broker (ActiveMQ or RabbitMQ), a migrated database
with its subnets and DHCP servers, and the two daemons as subprocesses (dhcpd itself:
soak_dhcpd)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg

from generator import syntax_check
from machinedb import broker_profile

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(1, str(ROOT))  # tests.e2e.netns, the namespace harness

import services  # noqa: E402  (scripts/services.py)

from tests.e2e import netns  # noqa: E402

DESTINATION = "/topic/VirtualTopic.machinedb.changes"
GENERATOR_CONSUMER = "dhcp"
BROKERS = (broker_profile.ACTIVEMQ, broker_profile.RABBITMQ)
SERVER = "soak"  # the dhcp_server whose scope the generator renders (--server)
OTHER_SERVER = "soak-other"  # a second server: its subnets are outside the scope
STOP_TIMEOUT = 15.0  # seconds for a daemon to exit after SIGTERM
EXIT_UNAVAILABLE = 1  # both commands' exit code for a service unreachable at start-up

# Every outbox id ever committed, copied by a trigger in the writer's own transaction,
# so the record holds exactly the committed changes whatever happens to connections.
RECORD_WRITTEN_SQL = """
CREATE TABLE soak_written (id bigint PRIMARY KEY);
CREATE FUNCTION soak_record_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.soak_written (id) SELECT id FROM new_rows;
    RETURN NULL;
END $$;
CREATE TRIGGER soak_record_written AFTER INSERT ON cdc.change
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION soak_record_written();
"""

# Three large subnets the writers use, and one the probes own. In each writer subnet the
# third octet says what an address is for: 1-127 single writes, 128-247 bulk imports,
# 248-255 the dynamic pool, which moves around in there and never meets an interface.
# The soak's server serves soak-a, soak-b (shared with the other server, as a failover
# pair would), the probes' subnet and the link dhcpd really listens on (LINK_SUBNET_SQL);
# soak-c belongs to the other server only. The writers write into all of them.
SUBNETS_SQL = """
INSERT INTO subnet (name, network, gateway, domain_name, dns_servers, pool_start, pool_end,
                    lease_time) VALUES
    ('soak-a', '10.60.0.0/16', '10.60.0.1', 'a.soak.example.org', '{10.53.0.1}',
     '10.60.250.10', '10.60.250.160', 3600),
    ('soak-b', '10.61.0.0/16', '10.61.0.1', 'b.soak.example.org', '{10.53.0.2}',
     '10.61.250.10', '10.61.250.160', 3600),
    ('soak-c', '10.63.0.0/16', '10.63.0.1', 'c.soak.example.org', '{10.53.0.3}',
     '10.63.250.10', '10.63.250.160', 3600),
    ('soak-probe', '10.62.0.0/16', '10.62.0.1', 'probe.soak.example.org', '{}', NULL, NULL,
     600);
INSERT INTO hardware_type (name, vendor, model) VALUES ('soak', 'Acme', 'Soak 1');
INSERT INTO service (name) VALUES ('http'), ('dns');
"""

LINK_SUBNET_SQL = """
INSERT INTO subnet (name, network, gateway, domain_name, pool_start, pool_end, lease_time)
VALUES ('soak-link', %(network)s, %(gateway)s, 'link.soak.example.org', %(pool_start)s,
        %(pool_end)s, 600)
"""

SERVERS_SQL = """
INSERT INTO dhcp_server (name, description) VALUES
    (%(server)s, 'the soak''s dhcpd'), (%(other)s, 'a server the soak does not run')
"""
SCOPES_SQL = """
INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id)
    SELECT d.id, s.id FROM dhcp_server d, subnet s
    WHERE (d.name = %(server)s AND s.name IN ('soak-a', 'soak-b', 'soak-probe', 'soak-link'))
       OR (d.name = %(other)s AND s.name IN ('soak-b', 'soak-c'))
"""

LINK_HOSTS = range(10, 40)  # host numbers of the link network given reservations at start
LINK_POOL = (200, 250)  # host numbers of the link network's dynamic pool


@dataclass(frozen=True)
class Paths:
    """Where everything of one run lives."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def output(self) -> Path:
        return self.root / "dhcpd.conf"

    @property
    def fresh(self) -> Path:
        return self.root / "fresh.conf"

    @property
    def reload_log(self) -> Path:
        return self.logs / "reloads.log"

    @property
    def reload_wrapper(self) -> Path:
        return self.root / "reload-dhcpd.sh"

    @property
    def omapi_key(self) -> Path:
        return self.root / "omapi.key"

    @property
    def leases(self) -> Path:
        return self.root / "dhcpd.leases"

    @property
    def dhcpd_pid(self) -> Path:
        return self.root / "dhcpd.pid"

    @property
    def dhcpd_lock(self) -> Path:
        return self.root / "dhcpd.lock"

    @property
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def broker(self) -> Path:
        return self.root / "activemq"

    @property
    def rabbitmq(self) -> Path:
        return self.root / "rabbitmq"


def missing_prerequisites(kind: str = broker_profile.ACTIVEMQ) -> list[str]:
    """What this machine lacks to run the soak on a ``kind`` broker (empty when it has
    everything)."""
    missing = []
    try:
        services.pg_bin()
    except services.ServiceError:
        missing.append("PostgreSQL server binaries (apt-get install postgresql)")
    if kind == broker_profile.RABBITMQ:
        if not services.have_rabbitmq():
            missing.append("RabbitMQ (apt-get install rabbitmq-server)")
    elif not (services.ACTIVEMQ_HOME / "bin" / "activemq.jar").exists() or not shutil.which("java"):
        missing.append("ActiveMQ (apt-get install activemq)")
    if syntax_check.find_binary("dhcpd") is None:
        missing.append("ISC dhcpd (apt-get install isc-dhcp-server)")
    ok, lacking = netns.available()
    if not ok:
        missing.append(f"network namespaces: {lacking}")
    if shutil.which("flock") is None:
        missing.append("flock (util-linux)")
    return missing


class Broker:
    """The soak's broker, ActiveMQ or a RabbitMQ node, as the soak, its chaos and its
    auditor use it.

    RabbitMQ drops what it is sent while no queue is bound to the topic (and confirms it
    all the same), so ``declare_queues`` declares the consumer queues before anything is
    published, as a deployment's definitions do; they are durable and outlive the
    node's restarts. ActiveMQ declares ``queues`` (consumer names) in its copy of
    ``activemq.xml``, whose own declares only the generator's.
    """

    def __init__(self, kind: str, paths: Paths, *, queues: Sequence[str] = ()) -> None:
        self.kind = broker_profile.check_kind(kind)
        self.profile = broker_profile.Profile(self.kind)
        self.service: services.ActiveMQBroker | services.RabbitMQNode
        if self.kind == broker_profile.RABBITMQ:
            self.service = services.RabbitMQNode(paths.rabbitmq)
        else:
            self.service = services.ActiveMQBroker(paths.broker, queues=queues)

    @property
    def rabbitmq(self) -> bool:
        return self.profile.rabbitmq

    @property
    def name(self) -> str:
        return "RabbitMQ" if self.rabbitmq else "ActiveMQ"

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def port(self) -> int:
        return self.service.port

    def start(self) -> None:
        self.service.start()

    def pid(self) -> int | None:
        return self.service.pid()

    def stop(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM) or kill (SIGKILL) the broker, to start it again; a RabbitMQ
        node's epmd stays up, as the system's would."""
        if isinstance(self.service, services.RabbitMQNode):
            self.service.stop_node_only(kill=kill)
        else:
            self.service.stop(kill=kill)

    def close(self, *, keep: bool) -> None:
        """Stop it for good: its data kept (``keep``) or deleted."""
        if keep:
            self.service.stop()
        else:
            self.service.destroy()

    def declare_queues(self, consumers: Sequence[str]) -> None:
        """RabbitMQ: declare each consumer's durable queue, bound to the topic."""
        if isinstance(self.service, services.RabbitMQNode):
            self.service.declare_queues([consumer_queue(c) for c in consumers])

    def reader(self, consumer: str, *, prefetch: int) -> tuple[str, dict[str, str]]:
        """Where an independent client reads ``consumer``'s queue, with the SUBSCRIBE
        headers that set its prefetch: ``/queue/Consumer.<name>.VirtualTopic.X`` on
        ActiveMQ, ``/amq/queue/Consumer.<name>.VirtualTopic.X`` on RabbitMQ."""
        subscription = self.profile.subscriptions(consumer_queue(consumer), prefetch=prefetch)[0]
        return subscription.destination, dict(subscription.headers)

    def client_options(self) -> dict[str, Any]:
        """What a plain stomp.py client needs to log in: RabbitMQ's user and its
        virtual host (stomp.py would send the server's name as the host header)."""
        if not self.rabbitmq:
            return {}
        return {
            "login": (services.RABBITMQ_USER, services.RABBITMQ_PASSWORD),
            "vhost": "/",
        }


def consumer_queue(consumer: str) -> str:
    """``/queue/Consumer.<consumer>.VirtualTopic.machinedb.changes``."""
    return broker_profile.QUEUE_PREFIX + broker_profile.queue_name(DESTINATION, consumer)


def make_services(
    paths: Paths, kind: str, *, queues: Sequence[str] = ()
) -> tuple[services.PostgresCluster, Broker]:
    """PostgreSQL, and the broker with ``queues`` (consumer names) declared."""
    return services.PostgresCluster(paths.pg, fsync=True), Broker(kind, paths, queues=queues)


def start_services(cluster: services.PostgresCluster, broker: Broker) -> None:
    """Start both side by side (the broker is the slow one)."""
    failures: list[BaseException] = []

    def start_broker() -> None:
        try:
            broker.start()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=start_broker, name="broker-start")
    thread.start()
    try:
        cluster.start()
    finally:
        thread.join()
    if failures:
        raise failures[0]


def prepare_database(cluster: services.PostgresCluster, link: ipaddress.IPv4Network) -> str:
    """Create and migrate the machine database, record written ids, add the subnets
    (``link``: the network dhcpd serves on) and the DHCP servers with their scopes."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE machinedb")
    url = cluster.url("machinedb")
    services.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RECORD_WRITTEN_SQL)
        conn.execute(SUBNETS_SQL)
        start, end = (str(link.network_address + n) for n in LINK_POOL)
        conn.execute(
            LINK_SUBNET_SQL,
            {
                "network": str(link),
                "gateway": str(link.network_address + 1),
                "pool_start": start,
                "pool_end": end,
            },
        )
        names = {"server": SERVER, "other": OTHER_SERVER}
        conn.execute(SERVERS_SQL, names)
        conn.execute(SCOPES_SQL, names)
    return url


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


class Daemon:
    """One of the pipeline's commands as a subprocess, its output appended to a log.

    ``lock`` is held by whoever kills and restarts it, so a watcher can tell a planned
    death from a crash.
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.lock = threading.Lock()
        self.starts = 0
        self.crashes: list[str] = []  # exits nobody asked for
        # exits with EXIT_UNAVAILABLE at start-up while the broker or PostgreSQL was
        # down on purpose: the documented answer to an unreachable service, not a crash
        self.refused_starts: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / self.name), *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the soak only, which stops us in order
            )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL after ``STOP_TIMEOUT``. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def restart_if_crashed(self, *, outage: str = "") -> None:
        """Note and restart an exit nobody asked for (a crash is a finding); ``outage``
        names a service down on purpose right now, which excuses EXIT_UNAVAILABLE."""
        if not self.lock.acquire(blocking=False):
            return  # being killed or restarted on purpose
        try:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                if outage and code == EXIT_UNAVAILABLE:
                    self.refused_starts.append(f"{self.name} exited {code} while {outage} was down")
                else:
                    self.crashes.append(f"{self.name} exited with {code}")
                self.start()
        finally:
            self.lock.release()


def daemon_env(db_url: str, stomp_url: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "DATABASE_URL_FILE",
        "STOMP_URL_FILE",
        "STOMP_BROKER",
        "DHCP_CONSUMER",
        "SSL_CA_FILE",
    ):
        env.pop(name, None)
    env.update(DATABASE_URL=db_url, STOMP_URL=stomp_url, CDC_DESTINATION=DESTINATION)
    return env


def broker_args(kind: str) -> list[str]:
    """The daemons' ``--broker`` flag: RabbitMQ's is given, ActiveMQ's is detected."""
    return ["--broker", kind] if kind == broker_profile.RABBITMQ else []


def relay_daemon(
    env: dict[str, str], paths: Paths, metrics_port: int, *, broker: str = broker_profile.ACTIVEMQ
) -> Daemon:
    args = ["--metrics-port", str(metrics_port), *broker_args(broker)]
    return Daemon("cdc-relay", args, env, paths.logs / "cdc-relay.log")


def generator_daemon(
    env: dict[str, str],
    paths: Paths,
    *,
    metrics_port: int,
    omapi: str,
    reconcile_interval: float,
    broker: str = broker_profile.ACTIVEMQ,
) -> Daemon:
    """The generator of the soak's server: host changes over OMAPI at ``omapi``
    (HOST:PORT), restarts through the reload wrapper, a reconciliation every
    ``reconcile_interval`` seconds."""
    args = [
        "--format", "isc",
        "--output", str(paths.output),
        "--reload-command", str(paths.reload_wrapper),
        "--consumer", GENERATOR_CONSUMER,
        "--metrics-port", str(metrics_port),
        "--server", SERVER,
        "--omapi", omapi,
        "--omapi-key-file", str(paths.omapi_key),
        "--reconcile-interval", str(reconcile_interval),
        *broker_args(broker),
    ]  # fmt: skip
    return Daemon("dhcp-generator", args, env, paths.logs / "dhcp-generator.log")


def render_once(db_url: str, paths: Paths, *, omapi_port: int) -> int:
    """``dhcp-generator --once`` of the same server into ``paths.fresh``; its exit code.

    The OMAPI flags only make the render hold the same ``omapi-port`` and key lines as
    the daemon's: they name a closed port of this namespace (where no dhcpd listens),
    so the one-shot, which would send its difference from an empty file to dhcpd,
    reaches nothing and leaves the audited dhcpd alone.
    """
    env = daemon_env(db_url, "")
    env.pop("STOMP_URL")
    with open(paths.logs / "generator-once.log", "ab") as out:
        done = subprocess.run(
            [str(VENV_BIN / "dhcp-generator"), "--once", "--format", "isc",
             "--output", str(paths.fresh), "--server", SERVER,
             "--omapi", f"127.0.0.1:{omapi_port}", "--omapi-key-file", str(paths.omapi_key)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False,
        )  # fmt: skip
    return done.returncode


def postgres_up(db_url: str) -> bool:
    with contextlib.suppress(psycopg.Error):
        with psycopg.connect(db_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    return False


def scalar(db_url: str, sql: LiteralString) -> int:
    with psycopg.connect(db_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def wait_until(condition: Callable[[], bool], *, deadline: float, every: float = 0.2) -> bool:
    """Poll ``condition()`` until it is true or ``deadline`` seconds passed."""
    end = time.monotonic() + deadline
    while True:
        with contextlib.suppress(psycopg.Error, OSError):
            if condition():
                return True
        if time.monotonic() >= end:
            return False
        time.sleep(every)
