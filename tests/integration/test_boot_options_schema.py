"""Boot options (migration 0007): next_server and boot files on subnet, hardware_type and
host; hostile file names and addresses refused with the row, column and rule named;
every change captured with the new columns; a downgrade that leaves nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from alembic import command
from psycopg import errors

from generator import schema
from tests.conftest import ROOT, alembic_config
from tests.integration.inventory import seed, snapshot
from tests.integration.test_migrations import schema_dump

pytestmark = pytest.mark.pg

DBA_DOC = ROOT / "docs" / "dba.md"
TABLES = ("subnet", "hardware_type", "host")
# (table, row id, how the message names the row)
ROWS = (
    ("subnet", 1, "subnet 1 ('lan')"),
    ("hardware_type", 1, "hardware_type 1 ('r640')"),
    ("host", 1, "host 1 ('web1')"),
)
COLUMNS = schema.BOOT_FILE_COLUMNS


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(db)
    return db


GOOD_FILES = [
    "pxelinux.0",
    "grubx64.efi",
    "/srv/tftp/EFI/BOOT/BOOTX64.EFI",
    "http://10.20.0.5/boot.ipxe",
    "a",
    "x" * 127,
    "{braces};and#hash=ok!",  # quoted in both configs: safe, if unusual
]


@pytest.mark.parametrize(("table", "row_id", "_label"), ROWS)
def test_good_boot_options_are_stored(
    seeded: psycopg.Connection[Any], table: str, row_id: int, _label: str
) -> None:
    for name in GOOD_FILES:
        for column in COLUMNS:
            seeded.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [name, row_id])
    seeded.execute(f"UPDATE {table} SET next_server = '10.20.0.5' WHERE id = %s", [row_id])
    row = seeded.execute(
        f"SELECT host(next_server), {', '.join(COLUMNS)} FROM {table} WHERE id = %s", [row_id]
    ).fetchone()
    assert row == ("10.20.0.5", *[GOOD_FILES[-1]] * len(COLUMNS))
    # NULL means "inherit from the next level"
    seeded.execute(
        f"UPDATE {table} SET next_server = NULL, {', '.join(f'{c} = NULL' for c in COLUMNS)}"
        " WHERE id = %s",
        [row_id],
    )


# (file name, a fragment of the name as the message shows it)
BAD_FILES = {
    "empty": ("", "''"),
    "too long": ("x" * 128, "x" * 100 + "'..."),
    "space": ("boot x.efi", "'boot x.efi'"),
    "tab": ("boot\tx.efi", "boot"),
    "double quote": ('x"; filename "evil', 'x"; filename'),
    "apostrophe": ("it's.efi", "it''s.efi"),
    "backslash": ("EFI\\BOOT\\BOOTX64.EFI", "BOOTX64.EFI"),
    "newline": ("grubx64.efi\nhost evil {", "grubx64.efi"),
    "carriage return": ("a\rb", "a"),
    "NUL-like control": ("a\x01b", "a"),
    "DEL": ("a\x7fb", "a"),
    "non-ascii": ("grüb.efi", "grüb.efi"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize(("table", "row_id", "label"), ROWS)
def test_a_bad_boot_file_name_is_refused_with_the_rule_named(
    seeded: psycopg.Connection[Any], table: str, row_id: int, label: str, case: str
) -> None:
    name, shown = BAD_FILES[case]
    rule = f"{table}_boot_file_name"
    before = snapshot(seeded)
    for column in COLUMNS:
        with pytest.raises(errors.CheckViolation) as raised:
            seeded.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [name, row_id])
        assert raised.value.diag.constraint_name == rule
        message = str(raised.value)
        for fragment in (f"{label}: {column} ", shown, "is not a boot file name", f"[rule {rule}]"):
            assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(seeded) == before


def test_a_new_row_with_a_bad_file_is_refused(seeded: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.CheckViolation) as raised:
        seeded.execute("INSERT INTO hardware_type (name, boot_file_uefi_x64) VALUES ('new', 'a b')")
    assert raised.value.diag.constraint_name == "hardware_type_boot_file_name"
    assert "('new'): boot_file_uefi_x64 'a b' is not" in str(raised.value)
    with pytest.raises(errors.CheckViolation) as raised:
        seeded.execute("INSERT INTO host (hostname, boot_file) VALUES ('n1', 'x\"y')")
    assert "('n1'): boot_file 'x\"y' is not" in str(raised.value)


BAD_SERVERS = {
    "network": "10.20.0.0/24",
    "ipv6": "2001:db8::1",
    "unspecified": "0.0.0.0",
    "broadcast": "255.255.255.255",
    "multicast": "224.0.0.1",
}


@pytest.mark.parametrize(("table", "row_id", "label"), ROWS)
def test_a_bad_next_server_is_refused(
    seeded: psycopg.Connection[Any], table: str, row_id: int, label: str
) -> None:
    rule = f"{table}_next_server_ipv4"
    for case, address in sorted(BAD_SERVERS.items()):
        with pytest.raises(errors.CheckViolation) as raised:
            seeded.execute(f"UPDATE {table} SET next_server = %s WHERE id = %s", [address, row_id])
        assert raised.value.diag.constraint_name == rule, case
        message = str(raised.value)
        assert f"{label}: next_server" in message, case
        assert f"is not a single IPv4 unicast address [rule {rule}]" in message, case


def test_the_checks_hold_without_the_triggers(seeded: psycopg.Connection[Any]) -> None:
    """The CHECK constraints refuse what the triggers would, even with triggers off."""
    seeded.execute("SET session_replication_role = replica")
    for table, row_id, _ in ROWS:
        with pytest.raises(errors.CheckViolation) as raised:
            seeded.execute(f"UPDATE {table} SET boot_file = 'a b' WHERE id = %s", [row_id])
        assert raised.value.diag.constraint_name == f"{table}_boot_file_name"
        with pytest.raises(errors.CheckViolation) as raised:
            seeded.execute(f"UPDATE {table} SET next_server = '0.0.0.0' WHERE id = %s", [row_id])
        assert raised.value.diag.constraint_name == f"{table}_next_server_ipv4"


def test_boot_option_changes_are_captured_for_every_role(seeded: psycopg.Connection[Any]) -> None:
    with seeded.transaction():
        seeded.execute("SET LOCAL ROLE machinedb_app")
        seeded.execute("UPDATE hardware_type SET boot_file_uefi_x64 = 'grubx64.efi' WHERE id = 1")
        seeded.execute("UPDATE host SET next_server = '10.20.0.6' WHERE id = 2")
        seeded.execute("UPDATE subnet SET boot_file = 'pxelinux.0' WHERE id = 1")
    rows = seeded.execute(
        "SELECT table_name, op, pk, before, after FROM cdc.change ORDER BY id"
    ).fetchall()
    assert [(t, op, pk) for t, op, pk, _, _ in rows] == [
        ("hardware_type", "UPDATE", {"id": 1}),
        ("host", "UPDATE", {"id": 2}),
        ("subnet", "UPDATE", {"id": 1}),
    ]
    assert (rows[0][3]["boot_file_uefi_x64"], rows[0][4]["boot_file_uefi_x64"]) == (
        None,
        "grubx64.efi",
    )
    assert rows[1][4]["next_server"] == "10.20.0.6"
    assert rows[2][4]["boot_file"] == "pxelinux.0"
    # the generator reads all three tables
    with seeded.transaction():
        seeded.execute("SET LOCAL ROLE machinedb_generator")
        for table in TABLES:
            seeded.execute(f"SELECT next_server, {', '.join(COLUMNS)} FROM {table}").fetchall()


def test_downgrade_removes_the_boot_options(db_url: str) -> None:
    head = schema_dump(db_url)
    config = alembic_config(db_url)
    command.downgrade(config, "0006")
    with psycopg.connect(db_url) as conn:
        left = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND (column_name = 'next_server'"
            " OR column_name LIKE 'boot_file%')"
        ).fetchall()
        functions = conn.execute(
            "SELECT proname FROM pg_proc WHERE proname IN"
            " ('is_boot_file_name', 'is_next_server', 'check_boot_options_v1')"
        ).fetchall()
    assert left == [] and functions == []
    command.upgrade(config, "head")
    assert schema_dump(db_url) == head


def test_dba_doc_states_the_columns_and_the_precedence() -> None:
    text = DBA_DOC.read_text()
    for fragment in (
        "host over hardware type over subnet",
        *COLUMNS,
        "next_server",
        "127",
        "option 93",
    ):
        assert fragment in text, fragment
