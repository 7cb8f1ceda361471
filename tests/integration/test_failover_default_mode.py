"""A failover pair row written without a mode (``dhcp_failover.mode`` NULL, migration
0009) runs in each server's own default mode, through the installed command against a
real PostgreSQL: ``--format isc`` renders an ISC failover pair, ``--format kea`` a Kea
HA pair in hot-standby (and its kea-ctrl-agent configs), each file byte for byte the
one rendered once the row names that mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration import generator_support as gs
from tests.integration.inventory import DHCP_SERVERS, seed

pytestmark = pytest.mark.pg

# dhcp-a (primary, 10.20.0.2:647) and dhcp-b (10.20.0.3:847) serve lan and mgmt
# (inventory.DHCP_SERVERS); no mode.
PAIR = (
    "INSERT INTO dhcp_failover (id, name, primary_server_id, secondary_server_id,"
    " primary_address, secondary_address) VALUES (1, 'pair-ab', 1, 2, '10.20.0.2', '10.20.0.3')"
)
SERVERS = ("dhcp-a", "dhcp-b")


@pytest.fixture
def pair(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(db)
    db.execute(DHCP_SERVERS)
    db.execute(PAIR)
    return db


def rendered(db_url: str, out: Path, *, fmt: str, server: str) -> str:
    """``--once`` (with the syntax check, ``dhcpd -t`` or ``kea-dhcp4 -t``): the file."""
    done = gs.run_generator(
        "--once", "--database-url", db_url, "--format", fmt, "--server", server,
        "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out.read_text()


def agent(db_url: str, out: Path, *, server: str) -> str:
    done = gs.run_generator(
        "--format", "kea", "--database-url", db_url, "--server", server,
        "--kea-ctrl-agent-config", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out.read_text()


def files(db_url: str, where: Path) -> dict[tuple[str, str], str]:
    """Both servers' dhcpd.conf, kea-dhcp4 config and agent config, by (kind, server)."""
    where.mkdir()
    found = {}
    for server in SERVERS:
        for fmt in ("isc", "kea"):
            out = where / f"{server}.{fmt}"
            found[fmt, server] = rendered(db_url, out, fmt=fmt, server=server)
        found["agent", server] = agent(db_url, where / f"{server}.agent", server=server)
    return found


def test_a_pair_without_a_mode_is_isc_failover_for_dhcpd_and_hot_standby_for_kea(
    db_url: str, pair: psycopg.Connection[Any], tmp_path: Path
) -> None:
    assert pair.execute("SELECT mode FROM dhcp_failover").fetchall() == [(None,)]
    found = files(db_url, tmp_path / "none")

    for server, role in zip(SERVERS, ("primary", "secondary"), strict=True):
        text = found["isc", server]
        assert 'failover peer "pair-ab" {' in text and f"  {role};" in text
        assert '    failover peer "pair-ab";' in text  # the pool names the peer
        dhcp4 = json.loads(found["kea", server])["Dhcp4"]
        (ha,) = dhcp4["hooks-libraries"][1]["parameters"]["high-availability"]
        assert (ha["this-server-name"], ha["mode"]) == (server, "hot-standby")
        assert [(peer["name"], peer["role"]) for peer in ha["peers"]] == [
            ("dhcp-a", "primary"),
            ("dhcp-b", "standby"),
        ]
        section = json.loads(found["agent", server])["Control-agent"]
        assert section["http-port"] == (647 if server == "dhcp-a" else 847)

    # the row with the defaults written out: the same bytes, server kind by server kind
    pair.execute("UPDATE dhcp_failover SET mode = 'isc-failover'")
    for server in SERVERS:
        out = tmp_path / f"{server}.isc-failover"
        assert rendered(db_url, out, fmt="isc", server=server) == found["isc", server]
    pair.execute("UPDATE dhcp_failover SET mode = 'kea-hot-standby'")
    for server in SERVERS:
        out = tmp_path / f"{server}.kea-hot-standby"
        assert rendered(db_url, out, fmt="kea", server=server) == found["kea", server]
        out = tmp_path / f"{server}.kea-hot-standby.agent"
        assert agent(db_url, out, server=server) == found["agent", server]
