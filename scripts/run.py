#!/usr/bin/env python3
"""Run the whole machinedb pipeline locally until Ctrl-C.

PostgreSQL and ActiveMQ run from a state directory (default ./run) and keep their data
and ports between runs; migrations and the sample inventory are idempotent, so running
this again continues where the last run stopped. The generator writes the rendered
config into the state directory; no DHCP server is started on your network.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import services

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
SAMPLE = REPO / "scripts" / "sample-inventory.sql"
STOP_TIMEOUT = 10.0  # seconds for each daemon to stop after SIGTERM
SMOKE_DEADLINE = 30.0  # seconds for a change to reach the rendered file

logger = logging.getLogger("run")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/run",
        description=__doc__.split("\n\n")[0],
        epilog="State directory layout: pg/ (PostgreSQL), activemq/ or rabbitmq/ (broker), logs/, "
        "and the "
        "rendered dhcpd.conf or kea-dhcp4.conf.",
    )
    parser.add_argument(
        "--dir", type=Path, default=REPO / "run", help="state directory (default: ./run)"
    )
    parser.add_argument(
        "--format", choices=["isc", "kea"], default="isc", help="config format (default: isc)"
    )
    parser.add_argument(
        "--broker",
        choices=["activemq", "rabbitmq"],
        default="activemq",
        help="the broker to start (default: activemq)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="start everything, make one change, wait for it in the rendered file, then stop",
    )
    return parser.parse_args(argv)


def prepare_database(cluster: services.PostgresCluster) -> str:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'machinedb'").fetchone() is None:
            conn.execute("CREATE DATABASE machinedb")
    url = cluster.url("machinedb")
    subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"],
        cwd=REPO,
        check=True,
        env={**os.environ, "DATABASE_URL": url},
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SAMPLE.read_text())  # a trusted file of our own
    return url


def start_daemon(
    name: str, args: list[str], env: dict[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115  (kept open for the child's life)
    logger.info("starting %s (log: %s)", name, logs / f"{name}.log")
    return subprocess.Popen(
        [str(VENV_BIN / name), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def stop_daemon(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
        logger.info("%s stopped (exit %s)", name, proc.returncode)
    except subprocess.TimeoutExpired:
        proc.kill()
        logger.warning("%s did not stop within %.0f s: killed", name, STOP_TIMEOUT)


def smoke_test(db_url: str, output: Path) -> bool:
    """One change through the whole pipeline: the new address must appear in the file."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT ip FROM interface WHERE mac = '52:54:00:77:00:50'").fetchone()
        new_ip = "10.77.0.51" if row and str(row[0]).startswith("10.77.0.50") else "10.77.0.50"
        conn.execute("UPDATE interface SET ip = %s WHERE mac = '52:54:00:77:00:50'", [new_ip])
    deadline = time.monotonic() + SMOKE_DEADLINE
    while time.monotonic() < deadline:
        if output.exists() and new_ip in output.read_text():
            logger.info("smoke test: %s reached %s", new_ip, output)
            return True
        time.sleep(0.05)
    logger.error("smoke test: %s did not reach %s within %.0f s", new_ip, output, SMOKE_DEADLINE)
    return False


def banner(db_url: str, output: Path, logs: Path) -> str:
    psql = f"psql '{db_url}'"
    return f"""
machinedb is running.
  rendered config : {output}
  database        : {psql}
  logs            : {logs}/cdc-relay.log, {logs}/dhcp-generator.log

Watch a change arrive (in another terminal):
  tail -f {logs}/dhcp-generator.log
  {psql} -c "UPDATE interface SET ip = '10.77.0.51' WHERE mac = '52:54:00:77:00:50'"
  grep -A3 printer-2f {output}

Ctrl-C stops everything this command started.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s run: %(message)s", datefmt="%H:%M:%S"
    )
    state = args.dir.resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    output = state / ("dhcpd.conf" if args.format == "isc" else "kea-dhcp4.conf")
    cluster = services.PostgresCluster(state / "pg")
    broker: services.ActiveMQBroker | services.RabbitMQNode = (
        services.RabbitMQNode(state / "rabbitmq")
        if args.broker == "rabbitmq"
        else services.ActiveMQBroker(state / "activemq")
    )
    daemons: list[tuple[str, subprocess.Popen[bytes]]] = []
    stop = {"requested": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        logger.info("starting PostgreSQL on port %s", cluster.port)
        cluster.start()
        db_url = prepare_database(cluster)
        logger.info("starting %s (STOMP on port %s)", args.broker, broker.port)
        broker.start()
        if isinstance(broker, services.RabbitMQNode):  # the queue before the first change
            broker.declare_queues(["/queue/Consumer.dhcp.VirtualTopic.machinedb.changes"])
        env = {**os.environ, "DATABASE_URL": db_url, "STOMP_URL": broker.url}
        daemons.append(("cdc-relay", start_daemon("cdc-relay", [], env, logs)))
        generator_args = [
            "--format",
            args.format,
            "--output",
            str(output),
            "--reload-command",
            "true",
        ]
        daemons.append(
            ("dhcp-generator", start_daemon("dhcp-generator", generator_args, env, logs))
        )
        if args.smoke:
            return 0 if smoke_test(db_url, output) else 1
        print(banner(db_url, output, logs), flush=True)
        while not stop["requested"]:
            for name, proc in daemons:
                if proc.poll() is not None:
                    logger.error(
                        "%s exited with %s; see %s/%s.log", name, proc.returncode, logs, name
                    )
                    return 1
            time.sleep(0.5)
        return 0
    except (services.ServiceError, subprocess.CalledProcessError, psycopg.Error) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        logger.info("stopping")
        for name, proc in reversed(daemons):
            stop_daemon(proc, name)
        broker.stop()
        cluster.stop()
        logger.info("stopped; state kept in %s", state)


if __name__ == "__main__":
    sys.exit(main())
