"""Failover pairs (migrations 0008, 0009): a pair row with defaults for every timer and
no mode (NULL: the server's default); the database refuses a server paired with
itself, a server in two pairs (so two primaries of one server's pairs), shared
endpoints, duplicate pair names, an unknown mode and, at commit, a pair whose two
scopes differ, each with the row and the rule named; writes are captured; the
generator's role can read pairs; a downgrade leaves the schema of 0007, and of 0008
with NULL modes made 'isc-failover'."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from alembic import command
from psycopg import errors

from generator import read
from tests.conftest import ROOT, alembic_config
from tests.integration.inventory import DHCP_SERVERS, seed, snapshot
from tests.integration.test_migrations import schema_dump

pytestmark = pytest.mark.pg

DBA_DOC = ROOT / "docs" / "dba.md"
DOCUMENTED_EXAMPLE = "-- a failover pair row for dhcp-a (primary) and dhcp-b (secondary)\n"

# dhcp-a and dhcp-b serve lan and mgmt (inventory.DHCP_SERVERS); mgmt.dhcp serves mgmt.
PAIR = (
    "INSERT INTO dhcp_failover (id, name, primary_server_id, secondary_server_id,"
    " primary_address, secondary_address) VALUES (1, 'pair-ab', 1, 2, '10.20.0.2', '10.20.0.3')"
)


@pytest.fixture
def servers(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(db)
    db.execute(DHCP_SERVERS)
    db.execute("DELETE FROM cdc.change")
    return db


def refused(conn: psycopg.Connection[Any], statement: str, rule: str, *fragments: str) -> None:
    """``statement`` is refused with ``rule`` named, the message holds ``fragments``, and
    nothing changed."""
    before = snapshot(conn)
    with pytest.raises(errors.CheckViolation) as raised, conn.transaction():
        conn.execute(statement)
    assert raised.value.diag.constraint_name == rule
    message = str(raised.value)
    for fragment in (f"[rule {rule}]", *fragments):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(conn) == before


def test_a_pair_gets_the_documented_defaults(servers: psycopg.Connection[Any]) -> None:
    servers.execute(PAIR)
    row = servers.execute(
        "SELECT mode, primary_port, secondary_port, mclt, max_response_delay,"
        " max_unacked_updates, load_balance_max_seconds, split, heartbeat_delay_ms,"
        " max_response_delay_ms, max_ack_delay_ms, max_unacked_clients FROM dhcp_failover"
    ).fetchone()
    assert row == (None, 647, 847, 3600, 60, 10, 3, 128, 10000, 60000, 5000, 5)


def mode_of(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("SELECT mode FROM dhcp_failover WHERE id = 1").fetchone()
    assert row is not None
    return row[0]


def test_a_pair_without_a_mode_passes_the_rules_of_0008(servers: psycopg.Connection[Any]) -> None:
    """NULL is no mode to refuse: 0008's CHECK passes it (it is not false) and its
    trigger's ``NOT IN`` is NULL, so nothing fires; a mode that is none of the three is
    still refused, by the trigger and, with triggers off, by the CHECK. The change
    message carries the NULL."""
    servers.execute(PAIR)
    assert mode_of(servers) is None
    servers.execute("UPDATE dhcp_failover SET mode = 'kea-hot-standby'")
    servers.execute("UPDATE dhcp_failover SET mode = NULL")
    assert mode_of(servers) is None
    refused(
        servers,
        "UPDATE dhcp_failover SET mode = 'hot-standby'",
        "dhcp_failover_mode_known",
        "dhcp_failover 1 ('pair-ab'): mode 'hot-standby' is none of isc-failover",
    )
    images = servers.execute(
        "SELECT op, after ? 'mode', after->>'mode' FROM cdc.change ORDER BY id"
    ).fetchall()
    assert images == [
        ("INSERT", True, None),
        ("UPDATE", True, "kea-hot-standby"),
        ("UPDATE", True, None),
    ]
    servers.execute("SET session_replication_role = replica")  # the CHECK alone
    try:
        servers.execute("UPDATE dhcp_failover SET mode = 'isc-failover'")
        servers.execute("UPDATE dhcp_failover SET mode = NULL")
        assert mode_of(servers) is None
        with pytest.raises(errors.CheckViolation) as raised:
            servers.execute("UPDATE dhcp_failover SET mode = 'hot-standby'")
        assert raised.value.diag.constraint_name == "dhcp_failover_mode_known"
    finally:
        servers.execute("RESET session_replication_role")


def test_a_server_cannot_be_its_own_partner(servers: psycopg.Connection[Any]) -> None:
    refused(
        servers,
        PAIR.replace("1, 2, '10", "1, 1, '10"),
        "dhcp_failover_not_self",
        "dhcp_failover 1 ('pair-ab')",
        "dhcp_server 1 cannot be its own partner",
    )
    servers.execute(PAIR)
    refused(
        servers,
        "UPDATE dhcp_failover SET secondary_server_id = 1",
        "dhcp_failover_not_self",
        "dhcp_failover 1",
    )


def test_a_server_has_one_partner_so_never_two_primaries(
    servers: psycopg.Connection[Any],
) -> None:
    servers.execute(PAIR)
    servers.execute("INSERT INTO dhcp_server (id, name) VALUES (4, 'dhcp-d')")
    servers.execute("INSERT INTO dhcp_server_subnet VALUES (4, 1), (4, 2)")
    # dhcp-b, secondary of pair-ab, as the primary of a second pair: two roles
    second = (
        "INSERT INTO dhcp_failover (id, name, primary_server_id, secondary_server_id,"
        " primary_address, secondary_address) VALUES (2, 'pair-bd', {}, {}, '10.20.0.3', '10.20.0.4')"
    )
    for primary, secondary in ((2, 4), (4, 2), (4, 1), (1, 4)):
        rule = "dhcp_failover_one_pair_per_server"
        # the same role twice also trips the column's UNIQUE; the trigger speaks first
        refused(servers, second.format(primary, secondary), rule, "already in dhcp_failover 1")


def test_endpoints_and_values_are_checked(servers: psycopg.Connection[Any]) -> None:
    same = PAIR.replace("'10.20.0.3'", "'10.20.0.2'")
    servers.execute(same)  # one address, ports 647 and 847: two listeners, allowed
    servers.execute("DELETE FROM dhcp_failover")
    refused(
        servers,
        same.replace("secondary_address)", "secondary_address, secondary_port)").replace(
            "'10.20.0.2')", "'10.20.0.2', 647)"
        ),
        "dhcp_failover_endpoints_distinct",
        "both peers would listen on 10.20.0.2 port 647",
    )
    refused(servers, PAIR.replace("'10.20.0.3'", "'10.20.0.0/24'"), "dhcp_failover_address_ipv4")
    refused(servers, PAIR.replace("'10.20.0.3'", "'fd00::3'"), "dhcp_failover_address_ipv4")
    refused(servers, PAIR.replace("'pair-ab'", "'pair ab\"; }'"), "dhcp_failover_name_plain")
    servers.execute(PAIR)
    refused(servers, "UPDATE dhcp_failover SET mode = 'dhcp-relay'", "dhcp_failover_mode_known")
    refused(servers, "UPDATE dhcp_failover SET secondary_port = 0", "dhcp_failover_port_range")
    for column, value in (("split", 257), ("mclt", 0), ("heartbeat_delay_ms", -1)):
        with pytest.raises(errors.CheckViolation) as raised:
            servers.execute(f"UPDATE dhcp_failover SET {column} = {value}")
        assert raised.value.diag.constraint_name == "dhcp_failover_timers_valid"


def test_pair_names_are_unique_whatever_their_case(servers: psycopg.Connection[Any]) -> None:
    servers.execute(PAIR)
    servers.execute("INSERT INTO dhcp_server (id, name) VALUES (4, 'c'), (5, 'd')")
    other = (
        "INSERT INTO dhcp_failover (id, name, primary_server_id, secondary_server_id,"
        " primary_address, secondary_address) VALUES (2, %s, 4, 5, '10.20.0.4', '10.20.0.5')"
    )
    for name in ("pair-ab", "PAIR-AB"):
        with pytest.raises(errors.UniqueViolation) as raised:
            servers.execute(other, [name])
        assert raised.value.diag.constraint_name in {
            "dhcp_failover_name_key",
            "dhcp_failover_name_lower_key",
        }


def test_scopes_must_be_equal_at_commit(servers: psycopg.Connection[Any]) -> None:
    servers.execute(PAIR)
    # links change one row at a time: a transaction may pass through unequal scopes
    servers.execute("INSERT INTO subnet (id, name, network) VALUES (3, 'lab', '10.30.0.0/24')")
    with servers.transaction():
        servers.execute("INSERT INTO dhcp_server_subnet VALUES (1, 3)")
        servers.execute("INSERT INTO dhcp_server_subnet VALUES (2, 3)")
    before = snapshot(servers)
    for statement, shown in (
        ("INSERT INTO dhcp_server_subnet VALUES (2, 3)", None),
        (
            "DELETE FROM dhcp_server_subnet WHERE (dhcp_server_id, subnet_id) = (2, 3)",
            "the primary 'dhcp-a' serves subnets {lab, lan, mgmt} but the secondary 'dhcp-b' "
            "serves {lan, mgmt}",
        ),
        (
            "UPDATE dhcp_server_subnet SET dhcp_server_id = 3 WHERE (dhcp_server_id, subnet_id) = (1, 3)",
            "'dhcp-a' serves subnets {lan, mgmt} but the secondary 'dhcp-b' serves {lab, lan, mgmt}",
        ),
    ):
        if shown is None:
            with pytest.raises(errors.UniqueViolation):
                servers.execute(statement)
            continue
        refused(
            servers,
            statement,
            "dhcp_failover_same_scope",
            "dhcp_failover 1 ('pair-ab')",
            shown,
            "must serve the same subnets",
        )
    assert snapshot(servers) == before
    # a new pair of servers with different scopes is refused at once
    refused(
        servers,
        "INSERT INTO dhcp_failover (name, primary_server_id, secondary_server_id,"
        " primary_address, secondary_address) VALUES ('x', 3, 3, '10.0.0.1', '10.0.0.2')",
        "dhcp_failover_not_self",
    )
    servers.execute("DELETE FROM dhcp_failover")
    servers.execute("INSERT INTO dhcp_server (id, name) VALUES (4, 'dhcp-d')")
    refused(
        servers,
        "INSERT INTO dhcp_failover (name, primary_server_id, secondary_server_id,"
        " primary_address, secondary_address) VALUES ('pair-3d', 3, 4, '10.0.0.1', '10.0.0.2')",
        "dhcp_failover_same_scope",
        "the primary 'mgmt.dhcp' serves subnets {mgmt} but the secondary 'dhcp-d' serves {}",
    )
    # deleting a subnet drops it from both scopes at once
    servers.execute(PAIR)
    servers.execute("DELETE FROM subnet WHERE name = 'lab'")
    # a server in a pair is not deleted from under it
    with pytest.raises(errors.ForeignKeyViolation) as raised:
        servers.execute("DELETE FROM dhcp_server WHERE id = 2")
    assert raised.value.diag.constraint_name == "dhcp_failover_secondary_server_id_fkey"


def test_pair_writes_are_captured_and_readable_by_the_generator(
    servers: psycopg.Connection[Any],
) -> None:
    with servers.transaction():
        servers.execute("SET LOCAL ROLE machinedb_app")
        servers.execute(PAIR)
        servers.execute("UPDATE dhcp_failover SET mclt = 300")
    rows = servers.execute(
        "SELECT table_name, op, pk, after->>'mclt' FROM cdc.change ORDER BY id"
    ).fetchall()
    assert rows == [
        ("dhcp_failover", "INSERT", {"id": 1}, "3600"),
        ("dhcp_failover", "UPDATE", {"id": 1}, "300"),
    ]
    with servers.transaction():
        servers.execute("SET LOCAL ROLE machinedb_generator")
        assert servers.execute("SELECT name, mclt FROM dhcp_failover").fetchall() == [
            ("pair-ab", 300)
        ]
        with pytest.raises(errors.InsufficientPrivilege):
            servers.execute("UPDATE dhcp_failover SET mclt = 1")


def test_downgrade_to_0007_leaves_the_schema_of_0007(
    new_database: Callable[[str | None], str],
) -> None:
    url = new_database(None)
    config = alembic_config(url)
    command.upgrade(config, "0007")
    at_0007 = schema_dump(url)
    command.upgrade(config, "0008")
    assert schema_dump(url) != at_0007
    command.downgrade(config, "0007")
    assert schema_dump(url) == at_0007
    with psycopg.connect(url) as conn:
        leftovers = conn.execute(
            "SELECT to_regclass('public.dhcp_failover'),"
            " to_regproc('cdc.capture_v2_public_dhcp_failover'),"
            " to_regproc('machinedb.check_dhcp_failover_v1'),"
            " to_regproc('machinedb.check_dhcp_failover_scope_v1')"
        ).fetchone()
    assert leftovers == (None, None, None, None)


def test_downgrade_to_0008_gives_a_pair_without_a_mode_the_old_default(
    new_database: Callable[[str | None], str],
) -> None:
    """0009 and back: the schema of 0008 again, a NULL mode made 'isc-failover' (0008's
    default, captured like any write), an explicit mode kept; upgraded again, the
    schema of 0009 with every row's mode as it was."""
    url = new_database(None)
    config = alembic_config(url)
    command.upgrade(config, "0008")
    at_0008 = schema_dump(url)
    command.upgrade(config, "0009")
    at_0009 = schema_dump(url)
    assert at_0009 != at_0008
    modes = "SELECT name, mode FROM dhcp_failover ORDER BY id"
    with psycopg.connect(url, autocommit=True) as conn:
        seed(conn)
        conn.execute(DHCP_SERVERS)
        conn.execute("INSERT INTO dhcp_server (id, name) VALUES (4, 'dhcp-c'), (5, 'dhcp-d')")
        conn.execute(PAIR)
        conn.execute(
            "INSERT INTO dhcp_failover (id, name, mode, primary_server_id, secondary_server_id,"
            " primary_address, secondary_address)"
            " VALUES (2, 'pair-cd', 'kea-load-balancing', 4, 5, '10.20.0.4', '10.20.0.5')"
        )
        conn.execute("DELETE FROM cdc.change")
        assert conn.execute(modes).fetchall() == [
            ("pair-ab", None),
            ("pair-cd", "kea-load-balancing"),
        ]
    command.downgrade(config, "0008")
    assert schema_dump(url) == at_0008
    with psycopg.connect(url) as conn:
        after = [("pair-ab", "isc-failover"), ("pair-cd", "kea-load-balancing")]
        assert conn.execute(modes).fetchall() == after
        changes = conn.execute("SELECT op, pk, after->>'mode' FROM cdc.change").fetchall()
        assert changes == [("UPDATE", {"id": 1}, "isc-failover")]
    command.upgrade(config, "0009")
    assert schema_dump(url) == at_0009
    with psycopg.connect(url) as conn:
        assert conn.execute(modes).fetchall() == after


def test_pairing_servers_as_docs_dba_md_shows(servers: psycopg.Connection[Any]) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", DBA_DOC.read_text(), flags=re.DOTALL)
    example = [block for block in blocks if block.startswith(DOCUMENTED_EXAMPLE)]
    assert len(example) == 1, "docs/dba.md should show the failover pair row example once"
    servers.execute("INSERT INTO subnet (id, name, network) VALUES (3, 'lab', '10.30.0.0/24')")
    # as the operator's application login would run it, statement by statement
    servers.execute("SET ROLE machinedb_app")
    rows: list[tuple[Any, ...]] = []
    for statement in example[0].split(";"):
        code = [line for line in statement.splitlines() if not line.startswith("--")]
        if any(line.strip() for line in code):
            cursor = servers.execute(statement)
            if cursor.description is not None:
                rows = cursor.fetchall()
    servers.execute("RESET ROLE")
    assert rows == [("dhcp-ab", None, "dhcp-a", "dhcp-b", "10.20.0.2:647", "10.20.0.3:847")]
    served = servers.execute(
        "SELECT dhcp_server_id FROM dhcp_server_subnet WHERE subnet_id = 3 ORDER BY 1"
    ).fetchall()
    assert served == [(1,), (2,)]
    assert servers.execute("SELECT mclt FROM dhcp_failover").fetchone() == (60,)


def test_a_scoped_read_carries_the_servers_side_of_its_pair(
    servers: psycopg.Connection[Any], db_url: str
) -> None:
    servers.execute(PAIR)
    servers.execute("UPDATE dhcp_failover SET mclt = 120, primary_port = 6470")
    engine = read.make_engine(db_url)
    try:
        sides = {
            server: {s.failover for s in read.read_inventory(engine, server=server).subnets}
            for server in (1, 2, 3)
        }
        unscoped = {s.failover for s in read.read_inventory(engine).subnets}
    finally:
        engine.dispose()
    (primary,), (secondary,) = sides[1], sides[2]
    assert primary is not None and secondary is not None
    assert (primary.role, secondary.role) == ("primary", "secondary")
    assert (str(primary.address), primary.port, str(primary.peer_address), primary.peer_port) == (
        "10.20.0.2", 6470, "10.20.0.3", 847,
    )  # fmt: skip
    assert (secondary.address, secondary.port) == (primary.peer_address, primary.peer_port)
    assert (secondary.peer_address, secondary.peer_port) == (primary.address, primary.port)
    assert primary.mclt == secondary.mclt == 120 and primary.name == secondary.name == "pair-ab"
    assert (primary.server_name, primary.peer_name) == ("dhcp-a", "dhcp-b")
    assert (secondary.server_name, secondary.peer_name) == ("dhcp-b", "dhcp-a")
    assert primary.heartbeat_delay_ms == secondary.heartbeat_delay_ms == 10000
    assert sides[3] == {None} and unscoped == {None}  # no pair: plain pools
    assert "dhcp_failover" in read.tables_read(server=1)  # a pair change is a full pass
    assert "dhcp_failover" not in read.tables_read(server=None)
