"""The soak's own world: PostgreSQL, ActiveMQ, a migrated database with an initial
inventory, the two daemons as subprocesses, and a reload command that plays dhcpd."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString

import psycopg

from generator import syntax_check

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))

import services  # noqa: E402  (scripts/services.py)

DESTINATION = "/topic/VirtualTopic.machinedb.changes"
GENERATOR_CONSUMER = "dhcp"
STOP_TIMEOUT = 15.0  # seconds for a daemon to exit after SIGTERM

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

# Two large subnets the writers use, and one the probes own. In each writer subnet the
# third octet says what an address is for: 1-127 single writes, 128-247 bulk imports,
# 248-255 the dynamic pool, which moves around in there and never meets an interface.
SUBNETS_SQL = """
INSERT INTO subnet (name, network, gateway, domain_name, dns_servers, pool_start, pool_end,
                    lease_time) VALUES
    ('soak-a', '10.60.0.0/16', '10.60.0.1', 'a.soak.example.org', '{10.53.0.1}',
     '10.60.250.10', '10.60.250.160', 3600),
    ('soak-b', '10.61.0.0/16', '10.61.0.1', 'b.soak.example.org', '{10.53.0.2}',
     '10.61.250.10', '10.61.250.160', 3600),
    ('soak-probe', '10.62.0.0/16', '10.62.0.1', 'probe.soak.example.org', '{}', NULL, NULL,
     600);
INSERT INTO hardware_type (name, vendor, model) VALUES ('soak', 'Acme', 'Soak 1');
INSERT INTO service (name) VALUES ('http'), ('dns');
"""

RELOAD_WRAPPER = """#!/bin/sh
# Plays the DHCP server: loads the file the generator hands over, as dhcpd would.
# One line per call: unix time, accepted|rejected, sha256 of the bytes checked.
conf="${{DHCP_CONFIG:?DHCP_CONFIG is not set}}"
copy="$(mktemp)"
cp "$conf" "$copy"
sum="$(sha256sum "$copy" | cut -d' ' -f1)"
if {dhcpd} -4 -t -q -cf "$copy" >/dev/null 2>&1; then verdict=accepted; else verdict=rejected; fi
rm -f "$copy"
printf '%s %s %s\\n' "$(date +%s.%N)" "$verdict" "$sum" >> {log}
[ "$verdict" = accepted ]
"""


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
    def pg(self) -> Path:
        return self.root / "pg"

    @property
    def broker(self) -> Path:
        return self.root / "activemq"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the soak (empty when it has everything)."""
    missing = []
    try:
        services.pg_bin()
    except services.ServiceError:
        missing.append("PostgreSQL server binaries (apt-get install postgresql)")
    if not (services.ACTIVEMQ_HOME / "bin" / "activemq.jar").exists() or not shutil.which("java"):
        missing.append("ActiveMQ (apt-get install activemq)")
    if syntax_check.find_binary("dhcpd") is None:
        missing.append("ISC dhcpd (apt-get install isc-dhcp-server)")
    return missing


def make_services(paths: Paths) -> tuple[services.PostgresCluster, services.ActiveMQBroker]:
    return services.PostgresCluster(paths.pg, fsync=True), services.ActiveMQBroker(paths.broker)


def start_services(cluster: services.PostgresCluster, broker: services.ActiveMQBroker) -> None:
    """Start both side by side (the broker's JVM is the slow one)."""
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


def prepare_database(cluster: services.PostgresCluster) -> str:
    """Create and migrate the machine database, record written ids, add the subnets."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE machinedb")
    url = cluster.url("machinedb")
    services.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RECORD_WRITTEN_SQL)
        conn.execute(SUBNETS_SQL)
    return url


def write_reload_wrapper(paths: Paths) -> None:
    dhcpd = syntax_check.find_binary("dhcpd")
    assert dhcpd is not None, "checked by missing_prerequisites"
    script = RELOAD_WRAPPER.format(dhcpd=shlex.quote(dhcpd), log=shlex.quote(str(paths.reload_log)))
    paths.reload_wrapper.write_text(script)
    paths.reload_wrapper.chmod(0o755)


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

    def restart_if_crashed(self) -> None:
        """Note and restart an exit nobody asked for (a crash is a finding)."""
        if not self.lock.acquire(blocking=False):
            return  # being killed or restarted on purpose
        try:
            if self.proc is not None and self.proc.poll() is not None:
                self.crashes.append(f"{self.name} exited with {self.proc.returncode}")
                self.start()
        finally:
            self.lock.release()


def daemon_env(db_url: str, stomp_url: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATABASE_URL_FILE", "STOMP_URL_FILE", "DHCP_CONSUMER", "SSL_CA_FILE"):
        env.pop(name, None)
    env.update(DATABASE_URL=db_url, STOMP_URL=stomp_url, CDC_DESTINATION=DESTINATION)
    return env


def relay_daemon(env: dict[str, str], paths: Paths, metrics_port: int) -> Daemon:
    args = ["--metrics-port", str(metrics_port)]
    return Daemon("cdc-relay", args, env, paths.logs / "cdc-relay.log")


def generator_daemon(env: dict[str, str], paths: Paths, metrics_port: int) -> Daemon:
    args = [
        "--format", "isc",
        "--output", str(paths.output),
        "--reload-command", str(paths.reload_wrapper),
        "--consumer", GENERATOR_CONSUMER,
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    return Daemon("dhcp-generator", args, env, paths.logs / "dhcp-generator.log")


def render_once(db_url: str, output: Path, log: Path) -> int:
    """``dhcp-generator --once`` into ``output``; its exit code."""
    env = daemon_env(db_url, "")
    env.pop("STOMP_URL")
    with open(log, "ab") as out:
        done = subprocess.run(
            [str(VENV_BIN / "dhcp-generator"), "--once", "--format", "isc",
             "--output", str(output)],
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
