"""The snapshot reader and the one-shot commands against a real PostgreSQL
(``dhcp-generator --once`` / ``--dry-run`` as subprocesses)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from generator import read
from tests.integration import generator_support as gs
from tests.integration.inventory import seed

pytestmark = pytest.mark.pg

EXTRA = """
INSERT INTO subnet (id, name, network, dhcp_enabled) VALUES (3, 'nodhcp', '10.22.0.0/24', false);
INSERT INTO host (id, hostname, enabled) VALUES (3, 'off1', false), (4, 'noip1', true), (5, 'lab1', true);
INSERT INTO interface (id, host_id, name, mac, ip) VALUES
    (4, 3, 'eth0', '52:54:00:00:00:04', '10.20.0.14'),
    (5, 4, 'eth0', '52:54:00:00:00:05', NULL),
    (6, 5, 'eth0', '52:54:00:00:00:06', '10.22.0.16');
"""


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(db)
    db.execute(EXTRA)
    return db


def test_reader_applies_the_reservation_rule(db_url: str, seeded: psycopg.Connection[Any]) -> None:
    engine = read.make_engine(db_url)
    try:
        inventory = read.read_inventory(engine)
    finally:
        engine.dispose()
    assert [s.name for s in inventory.subnets] == ["lan", "mgmt"]  # not the DHCP-less one
    lan = inventory.subnets[0]
    assert lan.dns_servers == (ipaddress.ip_address("10.20.0.2"), ipaddress.ip_address("10.20.0.3"))
    assert lan.lease_time == 3600
    # disabled host, interface without ip, ip in a DHCP-less subnet: all left out
    assert sorted(i.id for i in inventory.interfaces) == [1, 2, 3]
    web1 = next(i for i in inventory.interfaces if i.id == 1)
    assert (web1.hostname, web1.mac, str(web1.ip)) == ("web1", "52:54:00:00:00:01", "10.20.0.10")


def test_database_down_is_a_generator_error() -> None:
    engine = read.make_engine("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(read.DatabaseUnavailable, match="cannot read"):
        read.read_inventory(engine)


def test_once_writes_and_dry_run_changes_nothing(
    db_url: str, seeded: psycopg.Connection[Any], tmp_path: Path
) -> None:
    out = tmp_path / "dhcpd.conf"
    log = tmp_path / "reloads"
    args = [
        "--database-url",
        db_url,
        "--output",
        str(out),
        "--reload-command",
        gs.reload_command(log),
    ]
    done = gs.run_generator("--once", *args)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.count("\nhost ") == 3
    assert "fixed-address 10.20.0.10;" in text
    assert gs.reload_count(log) == 1

    assert gs.run_generator("--once", *args).returncode == 0
    assert gs.reload_count(log) == 1  # same bytes: no reload

    seeded.execute("UPDATE interface SET ip = '10.20.0.50' WHERE id = 1")
    dry = gs.run_generator("--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    assert "-  fixed-address 10.20.0.10;" in dry.stdout
    assert "+  fixed-address 10.20.0.50;" in dry.stdout
    assert out.read_text() == text  # nothing changed
    assert gs.reload_count(log) == 1


def test_once_kea_is_accepted_by_kea(
    db_url: str, seeded: psycopg.Connection[Any], tmp_path: Path
) -> None:
    out = tmp_path / "kea.json"
    done = gs.run_generator(
        "--once", "--format", "kea", "--database-url", db_url, "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    config = json.loads(out.read_text())["Dhcp4"]
    assert sum(len(s["reservations"]) for s in config["subnet4"]) == 3
    assert [s["id"] for s in config["subnet4"]] == [1, 2]


def test_wipe_guard_refuses_without_force(
    db_url: str, seeded: psycopg.Connection[Any], tmp_path: Path
) -> None:
    out = tmp_path / "dhcpd.conf"
    args = ["--database-url", db_url, "--output", str(out), "--removal-floor", "0"]
    assert gs.run_generator("--once", *args).returncode == 0
    before = out.read_text()
    seeded.execute("DELETE FROM host WHERE id = 1")  # 2 of 3 reservations go
    refused = gs.run_generator("--once", *args)
    assert refused.returncode != 0
    assert "refusing" in refused.stderr and "--force" in refused.stderr
    assert out.read_text() == before
    forced = gs.run_generator("--once", "--force", *args)
    assert forced.returncode == 0, forced.stderr
    assert out.read_text().count("\nhost ") == 1


def test_failing_reload_leaves_previous_file(
    db_url: str, seeded: psycopg.Connection[Any], tmp_path: Path
) -> None:
    out = tmp_path / "dhcpd.conf"
    args = ["--database-url", db_url, "--output", str(out)]
    assert gs.run_generator("--once", *args).returncode == 0
    before = out.read_text()
    seeded.execute("UPDATE interface SET ip = '10.20.0.50' WHERE id = 1")
    failed = gs.run_generator("--once", *args, "--reload-command", "false")
    assert failed.returncode != 0
    assert "restored" in failed.stderr
    assert out.read_text() == before
    assert (tmp_path / "dhcpd.conf.prev").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dhcpd.conf", "dhcpd.conf.prev"]


def test_unreachable_database_exits_non_zero(tmp_path: Path) -> None:
    done = gs.run_generator(
        "--once", "--database-url", "postgresql://x@127.0.0.1:1/x", "--output", str(tmp_path / "f")
    )
    assert done.returncode == 1
    assert "cannot read the machine database" in done.stderr
    assert not (tmp_path / "f").exists()
