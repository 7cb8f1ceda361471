"""Golden files for ``dhcp-generator --once`` against a real PostgreSQL, in both formats.

The unit golden files are rendered from in-memory inventories, so they never meet the
rows the reader's SQL filters out. Here a real database holds them all: several
subnets (one with ``dhcp_enabled = false``), pools and options, hosts with several
interfaces, a disabled host, interfaces without an address, a host with an interface
in the DHCP-less subnet, hardware types and services. The installed command renders
it; the result must equal ``golden/generator_once.conf`` / ``.json`` byte for byte,
hold exactly the expected reservations, and none of the rows (or free text) that do
not belong in a DHCP config. The real ``dhcpd -4 -t`` and ``kea-dhcp4 -t`` check the
golden files themselves.

``UPDATE_GOLDEN=1`` rewrites the golden files instead of comparing (as the unit golden
tests do); review the diff before keeping it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from generator import syntax_check
from tests.conftest import require
from tests.integration import generator_support as gs
from tests.integration.inventory import TABLES
from tests.unit import isc_syntax

pytestmark = [pytest.mark.pg, pytest.mark.dhcpd]

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"
GOLDEN = {"isc": "generator_once.conf", "kea": "generator_once.json"}
CHECK_TIMEOUT = 60  # seconds

# Subnet ids are not in network order, so Kea's ids show they come from the database.
# Free text that never belongs in a config is tagged (desc-, hwtype-, ...) to be found.
SEED = """
INSERT INTO hardware_type (id, name, vendor, model) VALUES
    (1, 'hwtype-r640', 'hwvendor-Dell', 'hwmodel-PowerEdge R640'),
    (2, 'hwtype-x11', 'hwvendor-Supermicro', 'hwmodel-X11SPi "rev; 2" {b}');
INSERT INTO subnet (id, name, network, gateway, domain_name, dns_servers,
                    pool_start, pool_end, lease_time, dhcp_enabled) VALUES
    (7, 'subnetname-lan', '10.40.0.0/24', '10.40.0.1', 'lan.example.org',
        '{10.40.0.2,10.40.0.3}', '10.40.0.100', '10.40.0.199', 3600, true),
    (3, 'subnetname-mgmt', '10.41.0.0/26', '10.41.0.1', NULL, '{}', NULL, NULL, NULL, true),
    (12, 'subnetname-dmz', '192.168.60.0/27', NULL, 'dmz.example.net', '{192.168.60.2}',
        '192.168.60.16', '192.168.60.29', 600, true),
    (5, 'subnetname-lab', '172.16.8.0/24', '172.16.8.1', 'labdomain.example.org',
        '{172.16.8.2}', '172.16.8.100', '172.16.8.150', 900, false),
    (9, 'subnetname-spare', '10.42.0.0/24', NULL, NULL, '{10.40.0.2}',
        '10.42.0.10', '10.42.0.250', 86400, true);
INSERT INTO host (id, hostname, hardware_type_id, enabled, description) VALUES
    (1, 'web1', 1, true, 'desc-front end "web" {tier 1}; # primary'),
    (2, 'db1', 2, true, 'desc-primary database'),
    (3, 'off1', 1, false, 'desc-retired, still cabled'),
    (4, 'noip1', NULL, true, NULL),
    (5, 'lab1', 2, true, 'desc-half in the lab'),
    (6, 'Gw2.Example.COM', NULL, true, NULL);
INSERT INTO interface (id, host_id, name, mac, ip) VALUES
    (1, 1, 'eth0', '52:54:00:40:00:10', '10.40.0.10'),
    (2, 1, 'eth1', '52:54:00:60:00:10', '192.168.60.10'),
    (3, 1, 'ipmi', '52:54:00:41:00:10', '10.41.0.10'),
    (4, 1, 'eth2', '52:54:00:40:00:fe', '10.40.0.254'),
    (5, 2, 'eth0', '52:54:00:40:00:11', '10.40.0.11'),
    (6, 2, 'eth1', '52:54:00:ee:00:11', NULL),
    (7, 3, 'eth0', '52:54:00:dd:00:12', '10.40.0.12'),
    (8, 3, 'ipmi', '52:54:00:dd:01:12', '10.41.0.12'),
    (9, 4, 'eth0', '52:54:00:ee:00:13', NULL),
    (10, 5, 'eth0', '52:54:00:cc:00:14', '172.16.8.14'),
    (11, 5, 'bond0.12', '52:54:00:40:00:14', '10.40.0.14'),
    (12, 6, 'eth0', '52:54:00:41:00:02', '10.41.0.2'),
    (13, 6, 'eth1', '52:54:00:60:00:02', '192.168.60.2');
INSERT INTO service (id, name) VALUES (1, 'svc-http'), (2, 'svc-postgres'), (3, 'svc-ssh');
INSERT INTO host_service (host_id, service_id) VALUES
    (1, 1), (1, 3), (2, 2), (2, 3), (3, 3), (5, 3);
"""

# (mac, ip, host-name) of every interface that must get a reservation.
EXPECTED = {
    ("52:54:00:40:00:10", "10.40.0.10", "web1"),
    ("52:54:00:60:00:10", "192.168.60.10", "web1"),
    ("52:54:00:41:00:10", "10.41.0.10", "web1"),
    ("52:54:00:40:00:fe", "10.40.0.254", "web1"),
    ("52:54:00:40:00:11", "10.40.0.11", "db1"),
    ("52:54:00:40:00:14", "10.40.0.14", "lab1"),
    ("52:54:00:41:00:02", "10.41.0.2", "Gw2.Example.COM"),
    ("52:54:00:60:00:02", "192.168.60.2", "Gw2.Example.COM"),
}
# Rendered subnets: (Kea id, network) in network order; 172.16.8.0/24 has DHCP off.
SUBNETS = [
    (7, "10.40.0.0/24"),
    (3, "10.41.0.0/26"),
    (9, "10.42.0.0/24"),
    (12, "192.168.60.0/27"),
]
ABSENT = [
    # interfaces without an address
    "52:54:00:ee:00:11",
    "52:54:00:ee:00:13",
    "noip1",
    # the disabled host and both its interfaces
    "off1",
    "52:54:00:dd:00:12",
    "52:54:00:dd:01:12",
    "10.40.0.12",
    "10.41.0.12",
    # the interface and the subnet with DHCP turned off
    "52:54:00:cc:00:14",
    "172.16.8.",
    "labdomain",
    # free text that never belongs in a DHCP config
    "desc-",
    "hwtype-",
    "hwvendor-",
    "hwmodel-",
    "svc-",
    "subnetname-",
]


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    db.execute(SEED)
    for table in TABLES:
        if table != "host_service":  # explicit ids above: move the sequences past them
            db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
    return db


def render_once(db_url: str, fmt: str, output: Path) -> str:
    """Run the installed ``dhcp-generator --once`` and return the file it wrote."""
    done = gs.run_generator(
        "--once", "--format", fmt, "--output", str(output), env={"DATABASE_URL": db_url}
    )
    assert done.returncode == 0, done.stderr
    assert "skipped" not in done.stderr  # every row the reader keeps is valid
    return output.read_text(encoding="utf-8")


def assert_golden(name: str, text: str) -> None:
    """Compare ``text`` with golden/``name`` (or rewrite it under UPDATE_GOLDEN=1)."""
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; see UPDATE_GOLDEN"


def dhcpd_check(path: Path) -> subprocess.CompletedProcess[str]:
    """The real ``dhcpd -4 -t -cf PATH`` (skipped locally if absent, failed under CI)."""
    binary = syntax_check.find_binary("dhcpd")
    require(binary is not None, "ISC dhcpd (apt-get install isc-dhcp-server)")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="golden-dhcpd-") as scratch:
        leases, pid = f"{scratch}/leases", f"{scratch}/pid"
        return subprocess.run(
            [binary, "-4", "-t", "-cf", str(path), "-lf", leases, "-pf", pid],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )


def kea_check(path: Path) -> subprocess.CompletedProcess[str]:
    """The real ``kea-dhcp4 -t PATH`` (skipped locally if absent, failed under CI)."""
    binary = syntax_check.find_binary("kea-dhcp4")
    require(binary is not None, "Kea (apt-get install kea-dhcp4-server)")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="golden-kea-") as scratch:
        return subprocess.run(
            [binary, "-t", str(path)],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            env={**os.environ, "KEA_LOCKFILE_DIR": scratch, "KEA_PIDFILE_DIR": scratch},
            check=False,
        )


CHECKERS = {"isc": dhcpd_check, "kea": kea_check}


def isc_layout(text: str) -> tuple[list[str], set[tuple[str, str, str]]]:
    """The subnets (network/prefix) and the (mac, ip, host-name) of every host block."""
    subnets, hosts = [], set()
    for statement in isc_syntax.parse(text):
        if statement.words[0] == "subnet":
            _, address, _, mask = statement.words
            subnets.append(str(ipaddress.ip_network(f"{address}/{mask}")))
        elif statement.words[0] == "host":
            body = [s.words for s in statement.block or []]
            assert [words[:-1] for words in body] == [
                ["hardware", "ethernet"],
                ["fixed-address"],
                ["option", "host-name"],
            ]
            (mac, ip, name) = (words[-1] for words in body)
            assert statement.words[1] == f"{name.lower()}-{mac.replace(':', '-')}"
            hosts.add((mac, ip, name))
    return subnets, hosts


@pytest.mark.parametrize("fmt", ["isc", "kea"])
def test_once_matches_golden(
    db_url: str, seeded: psycopg.Connection[Any], tmp_path: Path, fmt: str
) -> None:
    text = render_once(db_url, fmt, tmp_path / GOLDEN[fmt])
    assert_golden(GOLDEN[fmt], text)


def test_isc_golden_holds_exactly_the_reservable_interfaces() -> None:
    text = (GOLDEN_DIR / GOLDEN["isc"]).read_text(encoding="utf-8")
    subnets, hosts = isc_layout(text)
    assert subnets == [network for _, network in SUBNETS]
    assert hosts == EXPECTED
    assert text.count("\nhost ") == len(EXPECTED)
    for absent in ABSENT:
        assert absent not in text
    # the options of the fully configured subnet, all present
    assert (
        "subnet 10.40.0.0 netmask 255.255.255.0 {\n"
        "  option routers 10.40.0.1;\n"
        "  option domain-name-servers 10.40.0.2, 10.40.0.3;\n"
        '  option domain-name "lan.example.org";\n'
        "  default-lease-time 3600;\n"
        "  max-lease-time 3600;\n"
        "  range 10.40.0.100 10.40.0.199;\n"
        "}\n"
    ) in text


def test_kea_golden_holds_exactly_the_reservable_interfaces() -> None:
    text = (GOLDEN_DIR / GOLDEN["kea"]).read_text(encoding="utf-8")
    dhcp4 = json.loads(text)["Dhcp4"]
    assert [(s["id"], s["subnet"]) for s in dhcp4["subnet4"]] == SUBNETS
    found = [
        (r["hw-address"], r["ip-address"], r["hostname"])
        for s in dhcp4["subnet4"]
        for r in s["reservations"]
    ]
    assert len(found) == len(EXPECTED)
    assert set(found) == EXPECTED
    for absent in ABSENT:
        assert absent not in text
    [lan] = [s for s in dhcp4["subnet4"] if s["id"] == 7]
    assert lan["option-data"] == [
        {"name": "routers", "data": "10.40.0.1"},
        {"name": "domain-name-servers", "data": "10.40.0.2, 10.40.0.3"},
        {"name": "domain-name", "data": "lan.example.org"},
    ]
    assert lan["pools"] == [{"pool": "10.40.0.100 - 10.40.0.199"}]
    assert lan["valid-lifetime"] == lan["min-valid-lifetime"] == lan["max-valid-lifetime"] == 3600


@pytest.mark.parametrize("fmt", ["isc", "kea"])
def test_real_server_accepts_the_golden_file(fmt: str) -> None:
    checked = CHECKERS[fmt](GOLDEN_DIR / GOLDEN[fmt])
    assert checked.returncode == 0, checked.stdout + checked.stderr
