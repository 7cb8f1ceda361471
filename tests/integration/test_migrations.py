"""Migrations apply, roll back and re-apply to the same schema, online and as the
offline SQL script DBAs review (``alembic upgrade head --sql``); the SQLAlchemy models
match them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import services
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, ForeignKeyConstraint, PrimaryKeyConstraint, Table
from sqlalchemy import UniqueConstraint as SAUniqueConstraint
from sqlalchemy.dialects.postgresql import ExcludeConstraint

from generator import schema
from tests.conftest import ROOT, alembic_config
from tests.integration.inventory import ALL_TABLES

pytestmark = pytest.mark.pg

EXPECTED_TABLES = set(ALL_TABLES)
NewDatabase = Callable[[str | None], str]


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('public', 'cdc', 'machinedb')"
        ).fetchall()
    return {r[0] for r in rows}


def schema_dump(url: str) -> list[str]:
    """``pg_dump --schema-only`` without comments, blank lines and the per-run
    ``\\restrict`` key (pg_dump 15.14+), so two dumps of equal schemas are equal."""
    done = subprocess.run(
        [str(services.pg_bin() / "pg_dump"), "--schema-only", "--dbname", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line
        for line in done.stdout.splitlines()
        if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict"))
    ]


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def assert_capture_works(url: str) -> None:
    """One write through the head capture function lands in the outbox."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO host (id, hostname) VALUES (41, 'probe')")
        rows = conn.execute("SELECT table_name, op, pk, before, after FROM cdc.change").fetchall()
    assert len(rows) == 1
    table, op, pk, before, after = rows[0]
    assert (table, op, pk, before) == ("host", "INSERT", {"id": 41}, None)
    assert after == {
        "id": 41,
        "hostname": "probe",
        "hardware_type_id": None,
        "enabled": True,
        "description": None,
        "next_server": None,
        "boot_file": None,
        "boot_file_bios": None,
        "boot_file_uefi_x64": None,
        "boot_file_uefi_arm64": None,
    }


def test_upgrade_downgrade_upgrade_round_trips(new_database: NewDatabase) -> None:
    url = new_database(None)
    config = alembic_config(url)
    command.upgrade(config, "head")
    after_first = tables(url)
    assert {f"public.{t}" for t in EXPECTED_TABLES} <= after_first
    assert {"cdc.change", "cdc.doorbell"} <= after_first
    dump_first = schema_dump(url)

    command.downgrade(config, "base")
    assert tables(url) == {"public.alembic_version"}
    with psycopg.connect(url) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        functions = conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'"
        ).fetchone()
    assert not {"cdc", "machinedb"} & schemas
    assert functions == (0,)

    command.upgrade(config, "head")
    assert schema_dump(url) == dump_first
    assert_capture_works(url)


def alembic_sql(url: str, *args: str) -> str:
    """What a DBA gets from ``alembic <args> --sql`` in the repository root."""
    done = subprocess.run(
        [sys.executable, "-m", "alembic", *args, "--sql"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def psql(url: str, script: Path) -> None:
    client = [str(services.pg_bin() / "psql"), "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-q"]
    done = subprocess.run(
        [*client, "--dbname", url, "--file", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_offline_sql_applies_with_psql_and_rolls_back(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    url = new_database(None)
    upgrade = tmp_path / "upgrade.sql"
    upgrade.write_text(alembic_sql(url, "upgrade", "head"))
    psql(url, upgrade)

    with psycopg.connect(url) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert versions == [(head_revision(url),)]
    online = new_database(None)
    command.upgrade(alembic_config(online), "head")
    assert schema_dump(url) == schema_dump(online)  # the script builds what alembic builds
    assert_capture_works(url)

    downgrade = tmp_path / "downgrade.sql"
    downgrade.write_text(alembic_sql(url, "downgrade", "head:base"))
    psql(url, downgrade)
    assert tables(url) == {"public.alembic_version"}
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (0,)
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert not {"cdc", "machinedb"} & schemas


def test_models_do_not_drift_from_migrations(db_url: str) -> None:
    # alembic check raises AutogenerateDiffsDetected on any difference it can see:
    # tables, columns, types, nullability, server defaults, indexes, unique constraints
    command.check(alembic_config(db_url))


def model_constraints(table: Table) -> set[tuple[str, str, tuple[str, ...], str]]:
    """(kind, name, columns, referred table and ON DELETE) of every constraint the model declares;
    unnamed ones get the name PostgreSQL gives them."""
    found = set()
    for constraint in table.constraints:
        columns = tuple(c.name for c in constraint.columns)
        referred = ""
        if isinstance(constraint, PrimaryKeyConstraint):
            kind, default = "p", f"{table.name}_pkey"
        elif isinstance(constraint, ForeignKeyConstraint):
            kind, default = "f", f"{table.name}_{'_'.join(columns)}_fkey"
            referred = f"{constraint.referred_table.name} {constraint.ondelete or 'NO ACTION'}"
        elif isinstance(constraint, SAUniqueConstraint):
            kind, default = "u", f"{table.name}_{'_'.join(columns)}_key"
        elif isinstance(constraint, ExcludeConstraint):
            kind, default = "x", ""
        elif isinstance(constraint, CheckConstraint):
            kind, default, columns = "c", "", ()  # a text CHECK names no columns in the model
        else:
            raise AssertionError(f"unexpected constraint {constraint!r} on {table.name}")
        name = constraint.name if isinstance(constraint.name, str) else default
        assert name, f"{kind} constraint on {table.name} needs a name in generator/schema.py"
        found.add((kind, name, columns if kind != "x" else (), referred))
    return found


def database_constraints(conn: psycopg.Connection[Any], table: str) -> set[tuple[Any, ...]]:
    rows = conn.execute(
        """
        SELECT c.contype::text, c.conname,
               CASE WHEN c.contype IN ('p', 'u', 'f') THEN
                   ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, ord)
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                         ORDER BY k.ord)
               ELSE '{}' END,
               CASE WHEN c.contype = 'f' THEN c.confrelid::regclass::text || ' ' ||
                   CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'r' THEN 'RESTRICT'
                       WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT' ELSE 'NO ACTION' END
               ELSE '' END
          FROM pg_constraint c
         WHERE c.conrelid = %s::regclass
           AND c.contype <> 't'  -- constraint triggers are triggers: no model declares them
        """,
        [f"public.{table}"],
    ).fetchall()
    return {(kind, name, tuple(columns), referred) for kind, name, columns, referred in rows}


def test_constraint_names_match_the_models(db: psycopg.Connection[Any]) -> None:
    """alembic check ignores CHECK and EXCLUDE constraints and FK names: compare every
    constraint (primary key, unique, foreign key, check, exclude) by kind and name."""
    assert set(schema.metadata.tables) == EXPECTED_TABLES
    for name, table in schema.metadata.tables.items():
        assert database_constraints(db, name) == model_constraints(table), name


def test_every_inventory_table_is_tracked(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tracked = {r[0] for r in conn.execute("SELECT table_name::text FROM cdc.tracked_table")}
    assert tracked == EXPECTED_TABLES
