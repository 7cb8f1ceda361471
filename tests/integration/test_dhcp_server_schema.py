"""DHCP servers and their scopes (migration 0006): plain, case-insensitively unique
server names refused with the rule named; links that follow their server and subnet
away; every write captured with its primary key; a downgrade that leaves nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from alembic import command
from psycopg import errors

from tests.conftest import ROOT, alembic_config
from tests.integration.inventory import DHCP_SERVERS, seed, snapshot
from tests.integration.test_migrations import schema_dump

pytestmark = pytest.mark.pg

NAME_RULE = "dhcp_server_name_plain"
DBA_DOC = ROOT / "docs" / "dba.md"
DOCUMENTED_EXAMPLE = "-- a failover pair, dhcp-a and dhcp-b, serving the subnets lan and mgmt\n"


@pytest.fixture
def servers(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The seeded inventory with inventory.DHCP_SERVERS, and an empty outbox."""
    seed(db)
    db.execute(DHCP_SERVERS)
    db.execute("DELETE FROM cdc.change")
    return db


def links(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT dhcp_server_id, subnet_id FROM dhcp_server_subnet ORDER BY 1, 2"
    ).fetchall()


def changes(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT table_name, op, pk, before, after, txid FROM cdc.change ORDER BY id"
    ).fetchall()


GOOD_NAMES = ["a", "7", "dhcp-z", "DHCP_1.site-2", "0dhcp", "a" * 63, "peer.", "x-_-.y"]


def test_plain_names_are_accepted(servers: psycopg.Connection[Any]) -> None:
    for number, name in enumerate(GOOD_NAMES, start=10):
        servers.execute(
            "INSERT INTO dhcp_server (id, name, description) VALUES (%s, %s, %s)",
            [number, name, 'any "text"; { } goes here\n'],
        )
    servers.execute("UPDATE dhcp_server SET name = 'dhcp-a2' WHERE id = 1")
    rows = servers.execute("SELECT name FROM dhcp_server WHERE id >= 10 ORDER BY id").fetchall()
    assert [r[0] for r in rows] == GOOD_NAMES
    # a server without a description, and a description change that leaves the name alone
    servers.execute("UPDATE dhcp_server SET description = NULL WHERE id = 2")


# (name, a fragment of the name the message shows)
BAD_NAMES = {
    "empty": ("", "''"),
    "too long": ("a" * 64, "a" * 64),
    "space": ("dhcp a", "'dhcp a'"),
    "double quote": ('dhcp"a', 'dhcp"a'),
    "single quote": ("dhcp'a", "dhcp''a"),
    "closing brace": ("dhcp}", "dhcp}"),
    "opening brace": ("{dhcp", "{dhcp"),
    "semicolon": ("dhcp;a", "dhcp;a"),
    "newline inside": ("dhcp\nsubnet", "subnet"),
    "trailing newline": ("dhcp\n", "dhcp"),
    "leading hyphen": ("-dhcp", "'-dhcp'"),
    "leading dot": (".dhcp", "'.dhcp'"),
    "leading underscore": ("_dhcp", "'_dhcp'"),
    "slash": ("dhcp/a", "dhcp/a"),
    "non-ascii": ("dhcpé", "dhcpé"),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_bad_name_is_refused_with_the_rule_named(
    servers: psycopg.Connection[Any], case: str
) -> None:
    name, shown = BAD_NAMES[case]
    before = snapshot(servers)
    with pytest.raises(errors.CheckViolation) as raised:
        servers.execute("INSERT INTO dhcp_server (id, name) VALUES (20, %s)", [name])
    assert raised.value.diag.constraint_name == NAME_RULE
    message = str(raised.value)
    for fragment in ("dhcp_server 20: name", shown, "not a plain name", f"[rule {NAME_RULE}]"):
        assert fragment in message, f"{fragment!r} not in {message!r}"

    with pytest.raises(errors.CheckViolation) as raised:
        servers.execute("UPDATE dhcp_server SET name = %s WHERE id = 2", [name])
    assert raised.value.diag.constraint_name == NAME_RULE
    assert "dhcp_server 2: name" in str(raised.value)
    assert snapshot(servers) == before


def test_a_name_that_differs_only_in_case_is_a_duplicate(
    servers: psycopg.Connection[Any],
) -> None:
    before = snapshot(servers)
    with pytest.raises(errors.UniqueViolation) as raised:
        servers.execute("INSERT INTO dhcp_server (name) VALUES ('DHCP-A')")
    assert raised.value.diag.constraint_name == "dhcp_server_name_lower_key"
    assert "dhcp-a" in str(raised.value)
    with pytest.raises(errors.UniqueViolation) as raised:
        servers.execute("UPDATE dhcp_server SET name = 'Dhcp-B' WHERE id = 1")
    assert raised.value.diag.constraint_name == "dhcp_server_name_lower_key"
    with pytest.raises(errors.UniqueViolation) as raised:
        servers.execute("INSERT INTO dhcp_server (name) VALUES ('dhcp-a')")
    assert raised.value.diag.constraint_name in {
        "dhcp_server_name_key",
        "dhcp_server_name_lower_key",
    }
    with pytest.raises(errors.NotNullViolation):
        servers.execute("INSERT INTO dhcp_server (name) VALUES (NULL)")
    assert snapshot(servers) == before
    servers.execute("UPDATE dhcp_server SET name = 'DHCP-A' WHERE id = 1")  # its own name


def test_a_duplicate_or_dangling_link_is_refused(servers: psycopg.Connection[Any]) -> None:
    before = snapshot(servers)
    with pytest.raises(errors.UniqueViolation) as raised:
        servers.execute("INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id) VALUES (1, 2)")
    assert raised.value.diag.constraint_name == "dhcp_server_subnet_pkey"
    assert "(1, 2)" in str(raised.value)
    with pytest.raises(errors.ForeignKeyViolation) as raised:
        servers.execute("INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id) VALUES (9, 1)")
    assert raised.value.diag.constraint_name == "dhcp_server_subnet_dhcp_server_id_fkey"
    with pytest.raises(errors.ForeignKeyViolation) as raised:
        servers.execute("INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id) VALUES (1, 9)")
    assert raised.value.diag.constraint_name == "dhcp_server_subnet_subnet_id_fkey"
    with pytest.raises(errors.NotNullViolation):
        servers.execute("INSERT INTO dhcp_server_subnet (dhcp_server_id) VALUES (1)")
    assert snapshot(servers) == before


def test_deleting_a_server_or_a_subnet_takes_its_links_along(
    servers: psycopg.Connection[Any],
) -> None:
    servers.execute("INSERT INTO subnet (id, name, network) VALUES (3, 'lab', '10.30.0.0/24')")
    servers.execute("INSERT INTO dhcp_server_subnet VALUES (1, 3), (3, 3)")
    assert links(servers) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 2), (3, 3)]

    servers.execute("DELETE FROM dhcp_server WHERE name = 'dhcp-a'")
    assert links(servers) == [(2, 1), (2, 2), (3, 2), (3, 3)]
    servers.execute("DELETE FROM subnet WHERE name = 'lab'")
    assert links(servers) == [(2, 1), (2, 2), (3, 2)]
    # a subnet keeps its servers while the interface rules refuse its deletion
    with pytest.raises(errors.CheckViolation) as raised:
        servers.execute("DELETE FROM subnet WHERE name = 'mgmt'")
    assert raised.value.diag.constraint_name == "subnet_keeps_interfaces_valid"
    assert links(servers) == [(2, 1), (2, 2), (3, 2)]
    # a subnet without servers stays (it is simply rendered by no --server generator)
    servers.execute("DELETE FROM dhcp_server WHERE id IN (2, 3)")
    assert links(servers) == []
    subnets = servers.execute("SELECT count(*) FROM subnet").fetchone()
    assert subnets == (2,)


def test_every_write_is_captured_with_its_primary_key(servers: psycopg.Connection[Any]) -> None:
    servers.execute("INSERT INTO dhcp_server (id, name) VALUES (5, 'dhcp-e')")
    servers.execute("UPDATE dhcp_server SET description = 'spare' WHERE id = 5")
    servers.execute("INSERT INTO dhcp_server_subnet VALUES (5, 2), (5, 1)")
    servers.execute("DELETE FROM dhcp_server_subnet WHERE dhcp_server_id = 5 AND subnet_id = 2")
    with servers.transaction():  # the application role, which has no rights on cdc
        servers.execute("SET LOCAL ROLE machinedb_app")
        servers.execute("INSERT INTO dhcp_server_subnet VALUES (3, 1)")
    rows = changes(servers)
    assert [r[:5] for r in rows] == [
        (
            "dhcp_server",
            "INSERT",
            {"id": 5},
            None,
            {"id": 5, "name": "dhcp-e", "description": None},
        ),
        (
            "dhcp_server",
            "UPDATE",
            {"id": 5},
            {"id": 5, "name": "dhcp-e", "description": None},
            {"id": 5, "name": "dhcp-e", "description": "spare"},
        ),
        # a composite key: one JSON object with both columns, rows in key order
        (
            "dhcp_server_subnet",
            "INSERT",
            {"dhcp_server_id": 5, "subnet_id": 1},
            None,
            {"dhcp_server_id": 5, "subnet_id": 1},
        ),
        (
            "dhcp_server_subnet",
            "INSERT",
            {"dhcp_server_id": 5, "subnet_id": 2},
            None,
            {"dhcp_server_id": 5, "subnet_id": 2},
        ),
        (
            "dhcp_server_subnet",
            "DELETE",
            {"dhcp_server_id": 5, "subnet_id": 2},
            {"dhcp_server_id": 5, "subnet_id": 2},
            None,
        ),
        (
            "dhcp_server_subnet",
            "INSERT",
            {"dhcp_server_id": 3, "subnet_id": 1},
            None,
            {"dhcp_server_id": 3, "subnet_id": 1},
        ),
    ]
    # moving a link to another subnet changes its key: the old key with only a before
    # image, the new one with only an after image
    servers.execute("DELETE FROM cdc.change")
    servers.execute(
        "UPDATE dhcp_server_subnet SET subnet_id = 2 WHERE (dhcp_server_id, subnet_id) = (5, 1)"
    )
    moved = sorted(
        (r[1], r[2]["subnet_id"], r[3] is None, r[4] is None)
        for r in changes(servers)
        if r[0] == "dhcp_server_subnet" and r[2]["dhcp_server_id"] == 5
    )
    assert moved == [("UPDATE", 1, False, True), ("UPDATE", 2, True, False)]


def test_cascades_and_truncates_are_captured(servers: psycopg.Connection[Any]) -> None:
    servers.execute("DELETE FROM dhcp_server WHERE id = 1")
    rows = changes(servers)
    assert sorted((r[0], r[1], tuple(sorted(r[2].items()))) for r in rows) == [
        ("dhcp_server", "DELETE", (("id", 1),)),
        ("dhcp_server_subnet", "DELETE", (("dhcp_server_id", 1), ("subnet_id", 1))),
        ("dhcp_server_subnet", "DELETE", (("dhcp_server_id", 1), ("subnet_id", 2))),
    ]
    assert len({r[5] for r in rows}) == 1  # one transaction

    servers.execute("INSERT INTO subnet (id, name, network) VALUES (3, 'lab', '10.30.0.0/24')")
    servers.execute("INSERT INTO dhcp_server_subnet VALUES (2, 3), (3, 3)")
    servers.execute("DELETE FROM cdc.change")
    servers.execute("DELETE FROM subnet WHERE id = 3")
    assert sorted((r[0], r[1], tuple(sorted(r[2].items()))) for r in changes(servers)) == [
        ("dhcp_server_subnet", "DELETE", (("dhcp_server_id", 2), ("subnet_id", 3))),
        ("dhcp_server_subnet", "DELETE", (("dhcp_server_id", 3), ("subnet_id", 3))),
        ("subnet", "DELETE", (("id", 3),)),
    ]

    servers.execute("DELETE FROM cdc.change")
    servers.execute("TRUNCATE dhcp_server CASCADE")
    assert {r[:5] for r in changes(servers)} == {
        ("dhcp_server", "TRUNCATE", None, None, None),
        ("dhcp_server_subnet", "TRUNCATE", None, None, None),
        ("dhcp_failover", "TRUNCATE", None, None, None),  # it refers to dhcp_server (0008)
    }


def test_assigning_subnets_as_docs_dba_md_shows(db: psycopg.Connection[Any]) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", DBA_DOC.read_text(), flags=re.DOTALL)
    example = [block for block in blocks if block.startswith(DOCUMENTED_EXAMPLE)]
    assert len(example) == 1, "docs/dba.md should show the failover pair example once"
    seed(db)  # subnets 'lan' and 'mgmt'
    with db.transaction():  # as the operator's application login would run it
        db.execute("SET LOCAL ROLE machinedb_app")
        cursor = db.execute(example[0])
        while cursor.nextset():  # on to the last statement's result, the SELECT
            pass
        served = cursor.fetchall()
    assert [(server, subnet) for server, subnet, _ in served] == [
        ("dhcp-a", "lan"),
        ("dhcp-a", "mgmt"),
        ("dhcp-b", "lan"),
    ]


def test_downgrade_to_0005_leaves_the_schema_of_0005(
    new_database: Callable[[str | None], str],
) -> None:
    url = new_database(None)
    config = alembic_config(url)
    command.upgrade(config, "0005")
    at_0005 = schema_dump(url)
    command.upgrade(config, "0006")
    assert schema_dump(url) != at_0005
    command.downgrade(config, "0005")
    assert schema_dump(url) == at_0005
    with psycopg.connect(url) as conn:
        leftovers = conn.execute(
            "SELECT to_regclass('public.dhcp_server'), to_regclass('public.dhcp_server_subnet'), "
            "to_regproc('cdc.capture_v2_public_dhcp_server'), "
            "to_regproc('cdc.capture_v2_public_dhcp_server_subnet'), "
            "to_regproc('machinedb.check_dhcp_server_v1'), "
            "to_regproc('machinedb.is_dhcp_server_name')"
        ).fetchone()
        tracked = conn.execute(
            "SELECT count(*) FROM cdc.tracked_table WHERE table_name::text LIKE 'dhcp_server%'"
        ).fetchone()
    assert leftovers == (None,) * 6
    assert tracked == (0,)
