"""A Kea HA pair read from a real PostgreSQL by the installed command: ``--once`` renders
each server's kea-dhcp4 config from the scope (the two differ only in
``this-server-name``), and ``--kea-ctrl-agent-config`` writes each server's agent config
atomically and exits, refusing a server without a Kea pair and a pair of ISC's mode."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import psycopg
import pytest

from generator import render_options
from tests.integration import generator_support as gs
from tests.integration.inventory import DHCP_SERVERS, seed

pytestmark = pytest.mark.pg

# dhcp-a (primary, 10.20.0.2:8001) and dhcp-b (standby, 10.20.0.3:8002) serve lan and
# mgmt; mgmt.dhcp serves mgmt alone, without a partner.
PAIR = (
    "INSERT INTO dhcp_failover (id, name, mode, primary_server_id, secondary_server_id,"
    " primary_address, primary_port, secondary_address, secondary_port, heartbeat_delay_ms)"
    " VALUES (1, 'pair-ab', 'kea-hot-standby', 1, 2, '10.20.0.2', 8001, '10.20.0.3', 8002, 1000)"
)


@pytest.fixture
def pair(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(db)
    db.execute(DHCP_SERVERS)
    db.execute(PAIR)
    return db


def agent_config(db_url: str, server: str, target: Path, *extra: str) -> Any:
    return gs.run_generator(
        "--format", "kea", "--database-url", db_url, "--server", server,
        "--kea-ctrl-agent-config", str(target), *extra,
    )  # fmt: skip


def test_each_server_gets_its_agent_config(
    db_url: str, pair: psycopg.Connection[Any], tmp_path: Path
) -> None:
    sides = {"dhcp-a": ("10.20.0.2", 8001), "dhcp-b": ("10.20.0.3", 8002)}
    for server, (address, port) in sides.items():
        target = tmp_path / server / "kea-ctrl-agent.conf"
        done = agent_config(db_url, server, target, "--kea-control-socket", "/run/kea/k4.sock")
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        section = json.loads(target.read_text())["Control-agent"]
        assert (section["http-host"], section["http-port"]) == (address, port)
        assert section["control-sockets"]["dhcp4"]["socket-name"] == "/run/kea/k4.sock"
        assert [p.name for p in target.parent.iterdir()] == ["kea-ctrl-agent.conf"]
    # written again over the old file, atomically: a new inode, nothing left beside it
    target = tmp_path / "dhcp-a" / "kea-ctrl-agent.conf"
    before = target.stat().st_ino
    target.chmod(0o600)
    assert agent_config(db_url, "dhcp-a", target).returncode == 0
    assert target.stat().st_ino != before and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert json.loads(target.read_text())["Control-agent"]["control-sockets"]["dhcp4"][
        "socket-name"
    ] == (render_options.KEA_CONTROL_SOCKET)
    assert [p.name for p in target.parent.iterdir()] == ["kea-ctrl-agent.conf"]


def test_without_a_kea_pair_nothing_is_written(
    db_url: str, pair: psycopg.Connection[Any], tmp_path: Path
) -> None:
    target = tmp_path / "kea-ctrl-agent.conf"
    done = agent_config(db_url, "mgmt.dhcp", target)
    assert done.returncode == 1
    assert "DHCP server 'mgmt.dhcp' is in no Kea HA pair" in done.stderr
    pair.execute("UPDATE dhcp_failover SET mode = 'isc-failover'")
    done = agent_config(db_url, "dhcp-a", target)
    assert done.returncode == 1
    # refused by the checks every pass makes before writing (generator/failover.py)
    assert "mode isc-failover cannot be rendered as kea" in done.stderr
    assert "[rule failover_mode_format]" in done.stderr
    done = agent_config(db_url, "nosuch", target)
    assert done.returncode == 1 and "'nosuch' is not in the dhcp_server table" in done.stderr
    assert not target.exists()
    # usage errors: no --server, or ISC format
    usage = gs.run_generator(
        "--format", "kea", "--database-url", db_url, "--kea-ctrl-agent-config", str(target)
    )  # fmt: skip
    assert usage.returncode == 2 and "needs --server NAME" in usage.stderr
    usage = gs.run_generator(
        "--database-url", db_url, "--server", "dhcp-a", "--kea-ctrl-agent-config", str(target)
    )  # fmt: skip
    assert usage.returncode == 2 and "--kea-ctrl-agent-config needs --format kea" in usage.stderr
    assert not target.exists()


def test_once_renders_both_servers_of_the_pair(
    db_url: str, pair: psycopg.Connection[Any], tmp_path: Path
) -> None:
    configs = {}
    for server in ("dhcp-a", "dhcp-b"):
        output = tmp_path / f"{server}.json"
        done = gs.run_generator(
            "--once", "--format", "kea", "--database-url", db_url, "--server", server,
            "--output", str(output),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        configs[server] = json.loads(output.read_text())["Dhcp4"]
    a, b = configs["dhcp-a"], configs["dhcp-b"]
    ha_a = a["hooks-libraries"][1]["parameters"]["high-availability"][0]
    ha_b = b["hooks-libraries"][1]["parameters"]["high-availability"][0]
    assert (ha_a.pop("this-server-name"), ha_b.pop("this-server-name")) == ("dhcp-a", "dhcp-b")
    assert a == b
    assert ha_a["heartbeat-delay"] == 1000
    assert [(p["name"], p["role"], p["url"]) for p in ha_a["peers"]] == [
        ("dhcp-a", "primary", "http://10.20.0.2:8001/"),
        ("dhcp-b", "standby", "http://10.20.0.3:8002/"),
    ]
    assert [(s["id"], s["subnet"]) for s in a["subnet4"]] == [
        (1, "10.20.0.0/24"),
        (2, "10.21.0.0/24"),
    ]
