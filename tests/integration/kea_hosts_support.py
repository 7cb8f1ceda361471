"""Kea's hosts database for the tests: ``kea-admin db-init pgsql`` into a template once,
the roles and GRANTs of docs/deployment.md, a clone per test.

Shared by the integration and end-to-end tests of ``generator.kea_hosts``.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from generator import model, read, render_kea, render_options, validate

KEA_ADMIN = "kea-admin"
TEMPLATE = "kea_template"
WRITER = "kea_writer"  # the generator's login: changes hosts, nothing else
READER = "kea_reader"  # Kea's login: reads
# The GRANTs docs/deployment.md gives, for a database made by kea-admin db-init.
GRANTS = f"""
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {WRITER}, {READER};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER};
GRANT SELECT ON schema_version TO {WRITER};
GRANT SELECT, INSERT, UPDATE, DELETE ON hosts TO {WRITER};
GRANT USAGE ON SEQUENCE hosts_host_id_seq TO {WRITER};
"""

Reservation = tuple[int, str, str, str | None]  # subnet id, MAC, address, host name


def have_kea_admin() -> bool:
    return shutil.which(KEA_ADMIN) is not None


def url(cluster_url: str, database: str, user: str) -> str:
    """``cluster_url`` (postgresql://postgres@HOST:PORT/...) for ``user`` on ``database``."""
    base = cluster_url.rsplit("/", 1)[0]
    return base.replace("postgres@", f"{user}@", 1) + f"/{database}"


def init_template(admin_url: str, host: str, port: int) -> str:
    """Create the template database with Kea's schema and the roles (idempotent)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE,)).fetchone():
            return TEMPLATE
        for role in (WRITER, READER):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    argv = [KEA_ADMIN, "db-init", "pgsql", "-n", TEMPLATE, "-u", "postgres", "-h", host]
    done = subprocess.run(
        [*argv, "-P", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kea-admin db-init failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    with psycopg.connect(url(admin_url, TEMPLATE, "postgres"), autocommit=True) as conn:
        conn.execute(GRANTS)
    return TEMPLATE


def databases(admin_url: str) -> Iterator[Callable[[str | None], str]]:
    """A maker of databases (empty, or clones of ``TEMPLATE``), dropped afterwards."""
    made: list[str] = []

    def make(template: str | None = TEMPLATE) -> str:
        name = f"kea_{uuid.uuid4().hex[:10]}"
        clause = f" TEMPLATE {template}" if template else ""
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}{clause}")
        made.append(name)
        return name

    yield make
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def table_rows(database_url: str) -> set[Reservation]:
    """The DHCPv4 reservations in a hosts table."""
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT dhcp4_subnet_id, dhcp_identifier, ipv4_address, hostname FROM hosts"
            " WHERE dhcp4_subnet_id IS NOT NULL"
        ).fetchall()
    return {
        (int(s), ":".join(f"{b:02x}" for b in bytes(i)), str(ipaddress.IPv4Address(a)), h)
        for s, i, a, h in found
    }


def rendered_rows(machine_url: str, *, server: int | None = None) -> set[Reservation]:
    """The reservations of a fresh render of the machine database, inline, as Kea's
    config file would list them without a hosts database."""
    engine = read.make_engine(machine_url)
    try:
        snapshot = read.read_snapshot(engine, server=server)
    finally:
        engine.dispose()
    inventory: model.Inventory = validate.check(snapshot.inventory).inventory
    config: Any = json.loads(render_kea.render(inventory, options=render_options.RenderOptions()))
    return {
        (s["id"], r["hw-address"], r["ip-address"], r["hostname"])
        for s in config["Dhcp4"]["subnet4"]
        for r in s["reservations"]
    }
