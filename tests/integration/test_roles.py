"""Each role can do its job and nothing more."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.integration.inventory import DHCP_SERVERS, seed

pytestmark = pytest.mark.pg


def as_role(conn: psycopg.Connection[Any], role: str, statement: str) -> None:
    """Run one statement with the privileges of ``role``, in a transaction rolled back after."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"SET LOCAL ROLE {role}")
        conn.execute(statement)


ALLOWED = [
    ("machinedb_app", "INSERT INTO host (hostname) VALUES ('new-host')"),
    ("machinedb_app", "UPDATE interface SET ip = '10.20.0.30' WHERE id = 1"),
    ("machinedb_app", "DELETE FROM host WHERE id = 2"),
    ("machinedb_app", "TRUNCATE host_service"),
    ("machinedb_app", "INSERT INTO dhcp_server (name) VALUES ('dhcp-c')"),
    ("machinedb_app", "UPDATE dhcp_server SET description = 'peer' WHERE id = 3"),
    ("machinedb_app", "INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id) VALUES (3, 1)"),
    ("machinedb_app", "DELETE FROM dhcp_server_subnet WHERE subnet_id = 2"),
    ("machinedb_app", "DELETE FROM dhcp_server WHERE id = 1"),
    ("machinedb_app", "TRUNCATE dhcp_server CASCADE"),
    (
        "machinedb_generator",
        "SELECT h.hostname, i.mac, i.ip, s.network FROM host h "
        "JOIN interface i ON i.host_id = h.id JOIN subnet s ON s.network >> i.ip",
    ),
    (
        "machinedb_generator",
        "SELECT s.network FROM dhcp_server d JOIN dhcp_server_subnet ds ON ds.dhcp_server_id = d.id "
        "JOIN subnet s ON s.id = ds.subnet_id WHERE lower(d.name) = lower('DHCP-A')",
    ),
    ("machinedb_relay", "SELECT id, table_name, op FROM cdc.change ORDER BY id LIMIT 10"),
    ("machinedb_relay", "DELETE FROM cdc.change WHERE id < 100"),
    ("machinedb_relay", "UPDATE cdc.doorbell SET armed = false"),
    ("machinedb_relay", "LISTEN cdc_change"),
]

DENIED = [
    ("machinedb_app", "DELETE FROM cdc.change"),
    ("machinedb_app", "SELECT * FROM cdc.change"),
    ("machinedb_app", "INSERT INTO cdc.change (table_name, op, txid) VALUES ('host', 'INSERT', 1)"),
    ("machinedb_app", "UPDATE cdc.doorbell SET armed = false"),
    ("machinedb_generator", "UPDATE host SET enabled = false"),
    ("machinedb_generator", "INSERT INTO host (hostname) VALUES ('x')"),
    ("machinedb_generator", "DELETE FROM interface"),
    ("machinedb_generator", "SELECT * FROM cdc.change"),
    ("machinedb_generator", "INSERT INTO dhcp_server (name) VALUES ('x')"),
    ("machinedb_generator", "UPDATE dhcp_server SET name = 'x' WHERE id = 1"),
    ("machinedb_generator", "DELETE FROM dhcp_server"),
    ("machinedb_generator", "INSERT INTO dhcp_server_subnet VALUES (3, 1)"),
    ("machinedb_generator", "DELETE FROM dhcp_server_subnet"),
    ("machinedb_generator", "TRUNCATE dhcp_server_subnet"),
    ("machinedb_relay", "SELECT * FROM dhcp_server_subnet"),
    ("machinedb_relay", "INSERT INTO host (hostname) VALUES ('x')"),
    ("machinedb_relay", "SELECT * FROM host"),
    (
        "machinedb_relay",
        "INSERT INTO cdc.change (table_name, op, txid) VALUES ('host', 'INSERT', 1)",
    ),
    ("machinedb_relay", "UPDATE cdc.change SET op = 'DELETE'"),
]


@pytest.mark.parametrize(("role", "statement"), ALLOWED)
def test_role_can_do_its_job(db: psycopg.Connection[Any], role: str, statement: str) -> None:
    seed(db)
    db.execute(DHCP_SERVERS)
    as_role(db, role, statement)


@pytest.mark.parametrize(("role", "statement"), DENIED)
def test_role_cannot_do_more(db: psycopg.Connection[Any], role: str, statement: str) -> None:
    seed(db)
    db.execute(DHCP_SERVERS)
    with pytest.raises(errors.InsufficientPrivilege):
        as_role(db, role, statement)


def test_application_writes_are_captured_without_outbox_rights(db: psycopg.Connection[Any]) -> None:
    seed(db)
    with db.transaction():
        db.execute("SET LOCAL ROLE machinedb_app")
        db.execute("INSERT INTO host (hostname) VALUES ('captured')")
    row = db.execute("SELECT table_name, op, after->>'hostname' FROM cdc.change").fetchone()
    assert row == ("host", "INSERT", "captured")
