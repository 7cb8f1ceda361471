"""A small seeded inventory and a snapshot of every table, shared by the schema tests."""

from __future__ import annotations

from typing import Any

import psycopg

TABLES = ("hardware_type", "host", "subnet", "interface", "service", "host_service")
# Which DHCP server serves which subnet (migration 0006). Kept out of TABLES: code that
# moves identity sequences past SEED's ids expects an ``id`` column in every table of
# TABLES but host_service. SEED leaves these empty; DHCP_SERVERS fills them.
DHCP_SERVER_TABLES = ("dhcp_server", "dhcp_server_subnet", "dhcp_failover")
# Every table the migrations create in schema public, each captured.
ALL_TABLES = (*TABLES, *DHCP_SERVER_TABLES)

# The hosts and their interfaces (a test that deleted them can put them back).
HOSTS = """
INSERT INTO host (id, hostname, hardware_type_id, description) VALUES
    (1, 'web1', 1, 'front end'), (2, 'db1', NULL, NULL);
INSERT INTO interface (id, host_id, name, mac, ip) VALUES
    (1, 1, 'eth0', '52:54:00:00:00:01', '10.20.0.10'),
    (2, 1, 'ipmi', '52:54:00:00:01:01', '10.21.0.10'),
    (3, 2, 'eth0', '52:54:00:00:00:02', '10.20.0.11');
"""

SEED = (
    """
INSERT INTO hardware_type (id, name, vendor, model) VALUES (1, 'r640', 'Dell', 'PowerEdge R640');
INSERT INTO subnet (id, name, network, gateway, domain_name, dns_servers, pool_start, pool_end, lease_time)
VALUES (1, 'lan', '10.20.0.0/24', '10.20.0.1', 'lan.example.org', '{10.20.0.2,10.20.0.3}',
        '10.20.0.100', '10.20.0.200', 3600),
       (2, 'mgmt', '10.21.0.0/24', '10.21.0.1', NULL, '{}', NULL, NULL, NULL);
"""
    + HOSTS
    + """INSERT INTO service (id, name) VALUES (1, 'http'), (2, 'postgres');
INSERT INTO host_service (host_id, service_id) VALUES (1, 1), (2, 2);
"""
)


# Two failover peers serving both seeded subnets, and a third server serving 'mgmt' only.
DHCP_SERVERS = """
INSERT INTO dhcp_server (id, name, description) VALUES
    (1, 'dhcp-a', 'failover primary'), (2, 'dhcp-b', 'failover secondary'), (3, 'mgmt.dhcp', NULL);
INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id) VALUES (1, 1), (1, 2), (2, 1), (2, 2), (3, 2);
SELECT setval(pg_get_serial_sequence('dhcp_server', 'id'), 3);
"""


def seed(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SEED)
    for table in TABLES:
        if table != "host_service":  # explicit ids above: move the identity sequences past them
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
    conn.execute("DELETE FROM cdc.change")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every inventory table and of the outbox, in a stable order."""
    result = {}
    for table in (*ALL_TABLES, "cdc.change"):
        rows = conn.execute(f"SELECT t::text FROM {table} t ORDER BY 1").fetchall()
        result[table] = rows
    return result
