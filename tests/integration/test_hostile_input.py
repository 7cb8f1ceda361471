"""Hostile values, written through plain SQL as an application would (bound parameters):
each is either refused with a clear error or, where the database accepts it, rendered
safely. Legacy rows that predate a rule are skipped and named, never rendered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.conftest import require
from tests.integration.inventory import seed, snapshot

pytestmark = pytest.mark.pg

HOSTILE_TEXT = {
    "double quote": 'web"1',
    "single quote": "web'1",
    "closing brace": "web1; }",
    "opening brace": "host evil {",
    "semicolon": "a;b",
    "newline directive": "web1\nhost evil { hardware ethernet 52:54:00:66:66:66; }",
    "backslash": "web\\1",
    "non-ascii": "wéb1",
    "emoji": "web\N{PILE OF POO}",
    "sql injection": "x'); DROP TABLE host; --",
    "config injection": 'x"; } host evil { fixed-address 10.20.0.66; } #',
    "10 kB": "a" * 10_240,
    "empty": "",
    "space": "web 1",
}

# Columns the pipeline renders: hostile text must be refused.
RENDERED_TEXT_COLUMNS = {
    "host.hostname": ("INSERT INTO host (hostname) VALUES (%s)", "RFC 1123"),
    "interface.name": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, %s, '52:54:00:00:09:09')",
        "interface_name_safe",
    ),
    "subnet.domain_name": (
        "INSERT INTO subnet (name, network, domain_name) VALUES ('dmz', '10.30.0.0/24', %s)",
        "subnet_domain_name_rfc1123",
    ),
}


@pytest.mark.parametrize("value_name", sorted(HOSTILE_TEXT))
@pytest.mark.parametrize("column", sorted(RENDERED_TEXT_COLUMNS))
def test_hostile_text_in_rendered_columns_is_refused(
    db: psycopg.Connection[Any], column: str, value_name: str
) -> None:
    statement, rule = RENDERED_TEXT_COLUMNS[column]
    value = HOSTILE_TEXT[value_name]
    if column == "subnet.domain_name" and value == "":
        rule = "subnet_domain_name_rfc1123"
    seed(db)
    before = snapshot(db)
    with pytest.raises(errors.CheckViolation) as raised:
        db.execute(statement, [value])  # type: ignore[arg-type]
    assert rule in str(raised.value)
    assert snapshot(db) == before


def test_nul_byte_is_refused_by_postgresql(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.DataError):
        db.execute("INSERT INTO host (hostname) VALUES (%s)", ["web\x00evil"])


BAD_TYPED_VALUES = {
    "mac too long": ("INSERT INTO interface (host_id, mac) VALUES (2, %s)", "52:54:00:00:00:00:01"),
    "mac with injection": (
        "INSERT INTO interface (host_id, mac) VALUES (2, %s)",
        "52:54:00:00:00:0; }",
    ),
    "ip garbage": (
        "INSERT INTO interface (host_id, mac, ip) VALUES (2, '52:54:00:00:09:01', %s)",
        "10.20.0.1; }",
    ),
    "ip octet overflow": (
        "INSERT INTO interface (host_id, mac, ip) VALUES (2, '52:54:00:00:09:01', %s)",
        "10.20.0.256",
    ),
    "network garbage": ("INSERT INTO subnet (name, network) VALUES ('x', %s)", "10.30.0.0/24 { }"),
    "network host bits": ("INSERT INTO subnet (name, network) VALUES ('x', %s)", "10.30.0.1/24"),
    "dns injection": (
        "INSERT INTO subnet (name, network, dns_servers) VALUES ('x', '10.30.0.0/24', %s)",
        "{10.30.0.2;evil}",
    ),
    "lease time text": (
        "INSERT INTO subnet (name, network, lease_time) VALUES ('x', '10.30.0.0/24', %s)",
        "3600; }",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TYPED_VALUES))
def test_malformed_typed_values_are_refused_by_their_type(
    db: psycopg.Connection[Any], case: str
) -> None:
    statement, value = BAD_TYPED_VALUES[case]
    seed(db)
    before = snapshot(db)
    with pytest.raises(
        (errors.InvalidTextRepresentation, errors.InvalidParameterValue, errors.DataError)
    ):
        db.execute(statement, [value])  # type: ignore[arg-type]
    assert snapshot(db) == before


def _have_dhcpd() -> bool:
    return Path("/usr/sbin/dhcpd").exists()


def render_once(db_url: str, output: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("STOMP_URL", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "generator.cli",
            "--once",
            "--output",
            str(output),
            "--reload-command",
            "true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_free_text_columns_accept_anything_and_never_reach_the_config(
    db_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    require(_have_dhcpd(), "ISC dhcpd")
    seed(db)
    for value in HOSTILE_TEXT.values():
        db.execute(
            "INSERT INTO hardware_type (name, vendor, model) VALUES (%s, %s, %s)",
            [f"hw-{len(value)}-{hash(value)}", value, value],
        )
        db.execute("UPDATE host SET description = %s WHERE id = 1", [value])
    output = tmp_path / "dhcpd.conf"
    result = render_once(db_url, output)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "evil" not in text and "DROP" not in text
    check = subprocess.run(
        ["/usr/sbin/dhcpd", "-4", "-t", "-cf", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert text.count("\nhost ") == 3


def test_legacy_rows_that_predate_a_rule_are_skipped_and_named(
    db_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Rows written before the rules existed (simulated by switching the rules off)."""
    require(_have_dhcpd(), "ISC dhcpd")
    seed(db)
    db.execute("ALTER TABLE host DISABLE TRIGGER host_check")
    db.execute("ALTER TABLE host DROP CONSTRAINT host_hostname_rfc1123")
    db.execute("ALTER TABLE interface DISABLE TRIGGER interface_check")
    db.execute("INSERT INTO host (id, hostname) VALUES (50, %s)", ['evil"; } host pwned { #'])
    db.execute(
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (50, 'eth0', '52:54:00:00:50:50', '10.20.0.50')"
    )
    db.execute(
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth9', '52:54:00:00:50:51', '10.20.0.150')"
    )
    output = tmp_path / "dhcpd.conf"
    result = render_once(db_url, output)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "pwned" not in text and "52:54:00:00:50:50" not in text
    assert (
        "10.20.0.150" not in text.split("range")[-1].split("host ", 1)[-1]
    )  # not reserved inside the pool
    assert "52:54:00:00:50:51" not in text
    assert text.count("\nhost ") == 3  # the three valid reservations remain
    # each skipped row is named with the rule it breaks
    assert "interface 4 " in result.stderr and "host_hostname_rfc1123" in result.stderr
    assert "interface 5 " in result.stderr and "dynamic pool" in result.stderr
