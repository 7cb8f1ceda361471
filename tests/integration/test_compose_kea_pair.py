"""The compose profile kea-pair against a real database: the SQL of docs/deployment.md
("A Kea HA pair"), then each agent-config one-shot's command from docker-compose.yml
and a render of each server's side, as its generator would make it.

There is no Docker engine here: the commands run as subprocesses, with the container
paths of their output files moved into the test's directory.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration import generator_support as gs

pytestmark = [pytest.mark.pg]

AGENT_CONF = "/var/lib/machinedb/dhcp/kea-ctrl-agent.conf"
SIDES = (("a", "dhcp-a", "primary"), ("b", "dhcp-b", "standby"))


def default_of(value: str) -> str:
    """A compose value with each ``${VAR:-default}`` replaced by its default."""
    while "${" in value:
        head, rest = value.split("${", 1)
        inner, tail = rest.split("}", 1)
        value = head + inner.split(":-", 1)[1] + tail
    return value


def docs_sql() -> str:
    text = (gs.ROOT / "docs" / "deployment.md").read_text()
    section = text.split("\n## A Kea HA pair\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


def generator_of(services: dict[str, Any], side: str) -> dict[str, Any]:
    generator: dict[str, Any] = services[f"generator-kea-{side}"]
    return generator


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((gs.ROOT / "docker-compose.yml").read_text())
    found: dict[str, Any] = compose["services"]
    return found


def test_the_docs_pair_gives_each_agent_its_compose_address(
    services: dict[str, Any], db_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    db.execute(docs_sql())
    configs = {}
    for side, server, _ in SIDES:
        one_shot = services[f"kea-agent-config-{side}"]
        assert one_shot["environment"]["DHCP_SERVER"] == server
        assert generator_of(services, side)["environment"]["DHCP_SERVER"] == server
        out = tmp_path / f"agent-{side}.conf"
        argv = [str(out) if arg == AGENT_CONF else str(arg) for arg in one_shot["command"]]
        assert argv[0] == "dhcp-generator" and str(out) in argv
        done = gs.run_generator(*argv[1:], env={"DATABASE_URL": db_url, "DHCP_SERVER": server})
        assert done.returncode == 0, done.stderr
        agent = json.loads(out.read_text())["Control-agent"]
        address = default_of(services[f"kea-agent-{side}"]["networks"]["kea-pair"]["ipv4_address"])
        assert (agent["http-host"], agent["http-port"]) == (address, 8000)
        socket = agent["control-sockets"]["dhcp4"]["socket-name"]
        assert socket == "/run/kea/kea4-ctrl-socket"
        configs[side] = (address, socket)

    for side, server, _ in SIDES:
        out = tmp_path / f"kea-{side}.conf"
        done = gs.run_generator(
            "--once", "--format", "kea", "--server", server, "--output", str(out),
            "--interface", "*", env={"DATABASE_URL": db_url},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr  # kea-dhcp4 -t included
        dhcp4 = json.loads(out.read_text())["Dhcp4"]
        assert dhcp4["control-socket"]["socket-name"] == configs[side][1]
        (ha,) = dhcp4["hooks-libraries"][-1]["parameters"]["high-availability"]
        assert ha["this-server-name"] == server and ha["mode"] == "hot-standby"
        peers = {peer["name"]: (peer["url"], peer["role"]) for peer in ha["peers"]}
        assert peers == {name: (f"http://{configs[s][0]}:8000/", r) for s, name, r in SIDES}, (
            "each server reaches the other's agent"
        )
        # kea-dhcp4 serves the bridge's subnet from its own address there, outside the
        # pool and apart from the agents'
        (subnet,) = dhcp4["subnet4"]
        assert subnet["subnet"] == "172.31.252.0/24"
        assert subnet["pools"] == [{"pool": "172.31.252.100 - 172.31.252.199"}]
        kea = services[f"kea-{side}"]
        kea_address = ipaddress.ip_address(default_of(kea["networks"]["kea-pair"]["ipv4_address"]))
        assert kea_address in ipaddress.ip_network(subnet["subnet"])
        assert (
            not ipaddress.ip_address("172.31.252.100")
            <= kea_address
            <= ipaddress.ip_address("172.31.252.199")
        )
        assert str(kea_address) not in {address for address, _ in configs.values()}
