"""CI check of the deployment files: there is no Docker engine on the build machines, so
docker-compose.yml, the Dockerfiles and the systemd units are held to the contract here.

The compose services must run the console scripts from pyproject.toml with the
environment variables the README documents, wait for their dependencies in the right
state, and mount only files that exist. ``docker-compose config`` (Debian's
docker-compose, client side only) validates the file against the compose
specification when it is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
IN_CI = os.environ.get("CI", "").lower() == "true"

APP_SERVICES = ("migrate", "relay", "generator", "generator-kea")
DAEMONS = ("relay", "generator", "generator-kea")
GENERATORS = {"generator": "isc", "generator-kea": "kea"}
DEFAULT_DESTINATION = "/topic/VirtualTopic.machinedb.changes"
AMQ_NS = "{http://activemq.apache.org/schema/core}"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="module")
def console_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    return scripts


def documented_variables() -> set[str]:
    """The variable names in the README's configuration table (DESIGN.md's contract)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def option(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def declared_queues() -> set[str]:
    tree = ET.parse(ROOT / "deploy" / "activemq" / "activemq.xml")
    return {q.get("physicalName", "") for q in tree.iter(f"{AMQ_NS}queue")}


def test_all_services_exist(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", "activemq", *APP_SERVICES, "dhcpd", "kea"}
    assert expected <= set(services)
    assert services["kea"]["profiles"] == ["kea"]
    assert services["generator-kea"]["profiles"] == ["kea"]


def test_migrate_runs_alembic_from_the_repository_layout(
    services: dict[str, dict[str, Any]],
) -> None:
    assert command(services["migrate"]) == ["alembic", "upgrade", "head"]
    assert services["migrate"]["restart"] == "no"
    assert (ROOT / "alembic.ini").is_file()
    assert (ROOT / "migrations" / "env.py").is_file()


@pytest.mark.parametrize("name", DAEMONS)
def test_daemons_run_the_console_scripts(
    services: dict[str, dict[str, Any]], console_scripts: dict[str, str], name: str
) -> None:
    cmd = command(services[name])
    assert cmd[0] in console_scripts
    expected = "cdc-relay" if name == "relay" else "dhcp-generator"
    assert cmd[0] == expected
    assert services[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_the_image_and_the_documented_environment(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    assert service["build"] == "."
    assert service["image"] == services["relay"]["image"]
    env = environment(service)
    assert set(env) <= documented_variables()
    assert {"DATABASE_URL", "STOMP_URL"} <= set(env)
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["CDC_DESTINATION"] == DEFAULT_DESTINATION


def test_the_readme_documents_the_design_variables() -> None:
    assert {"DATABASE_URL", "STOMP_URL", "CDC_DESTINATION", "DHCP_CONSUMER"} <= (
        documented_variables()
    )


def test_no_password_is_written_inline(compose: dict[str, Any]) -> None:
    """Passwords come from the environment or .env; the only literal is the dev default."""
    lines = COMPOSE_FILE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for url in re.findall(r"(?:postgresql|stomp(?:\+ssl)?)://[^\s\"',]+", text):
        password = re.match(r"[a-z+]+://[^:/@]+:([^@]+)@", url)
        if password:
            assert password.group(1) == "${MACHINEDB_DB_PASSWORD:-machinedb-dev}", url
    postgres_env = environment(compose["services"]["postgres"])
    assert postgres_env["POSTGRES_PASSWORD"] == "${MACHINEDB_DB_PASSWORD:-machinedb-dev}"


def test_dependencies_wait_for_the_right_state(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in DAEMONS:
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "activemq": {"condition": "service_healthy"},
        }, name


def test_health_checks(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    activemq_check = " ".join(services["activemq"]["healthcheck"]["test"])
    assert "61613" in activemq_check
    assert "CONNECTED" in activemq_check
    for name in ("dhcpd", "kea"):
        assert services[name]["healthcheck"]["test"], name


def test_activemq_uses_the_repository_config_and_a_persistent_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    activemq = services["activemq"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in activemq["volumes"]}
    conf = mounts["/opt/apache-activemq/conf/activemq.xml"]
    assert (ROOT / conf).resolve() == ROOT / "deploy" / "activemq" / "activemq.xml"
    data = mounts["/opt/apache-activemq/data"]
    assert data in compose["volumes"]
    args = activemq["command"]
    assert "-Dactivemq.data=/opt/apache-activemq/data" in args
    assert "-Dmachinedb.stomp.port=61613" in args
    assert "xbean:file:/opt/apache-activemq/conf/activemq.xml" in args


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_every_generator_has_its_declared_queue(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    consumer = environment(services[name])["DHCP_CONSUMER"]
    topic = DEFAULT_DESTINATION.removeprefix("/topic/")
    assert f"Consumer.{consumer}.{topic}" in declared_queues()


def test_generators_use_distinct_consumers(services: dict[str, dict[str, Any]]) -> None:
    consumers = [environment(services[name])["DHCP_CONSUMER"] for name in GENERATORS]
    assert len(set(consumers)) == len(consumers)


@pytest.mark.parametrize(("name", "server"), [("generator", "dhcpd"), ("generator-kea", "kea")])
def test_generator_writes_where_its_server_reads(
    services: dict[str, dict[str, Any]], name: str, server: str
) -> None:
    generator, dhcp = services[name], services[server]
    cmd = command(generator)
    assert option(cmd, "--format") == GENERATORS[name]
    output = option(cmd, "--output")
    assert output is not None
    volume = next(
        v.split(":")[0] for v in generator["volumes"] if output.startswith(v.split(":")[1])
    )
    assert any(v.split(":")[0] == volume for v in dhcp["volumes"])
    conf_var = "DHCPD_CONF" if server == "dhcpd" else "KEA_CONF"
    assert environment(dhcp)[conf_var] == output
    assert dhcp["network_mode"] == "host"
    if server == "dhcpd":
        reload_command = option(cmd, "--reload-command")
        assert reload_command is not None
        assert reload_command in (ROOT / "Dockerfile").read_text()
    else:
        socket = option(cmd, "--kea-control-socket")
        assert socket is not None
        mount = next(v for v in generator["volumes"] if socket.startswith(v.split(":")[1] + "/"))
        assert mount in dhcp["volumes"]
        assert option(cmd, "--interface"), "Kea serves no interface without --interface"


def test_referenced_files_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build["context"]
            assert (ROOT / context / "Dockerfile").is_file(), f"{name}: {context}"


def dockerfiles() -> list[Path]:
    return [ROOT / "Dockerfile", *sorted((ROOT / "deploy").glob("*/Dockerfile"))]


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_copies_files_that_exist_and_are_not_ignored(dockerfile: Path) -> None:
    ignored = set()
    if dockerfile.parent == ROOT:
        lines = (ROOT / ".dockerignore").read_text().splitlines()
        ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        sources = [p for p in parts[1:-1] if not p.startswith("--")]
        for source in sources:
            assert (dockerfile.parent / source).exists(), f"{dockerfile}: {source}"
            assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"


def test_application_image_runs_as_a_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# syntax=docker/dockerfile:1")
    assert "FROM python:3.11-slim" in text
    assert re.search(r"^USER machinedb", text, flags=re.MULTILINE)
    assert "COPY alembic.ini" in text
    assert "COPY migrations" in text


@pytest.mark.parametrize(
    ("unit", "script"),
    [("cdc-relay.service", "cdc-relay"), ("dhcp-generator@.service", "dhcp-generator")],
)
def test_systemd_units(console_scripts: dict[str, str], unit: str, script: str) -> None:
    text = (ROOT / "deploy" / "systemd" / unit).read_text()
    assert script in console_scripts
    exec_start = re.search(r"^ExecStart=(\S+)", text, flags=re.MULTILINE)
    assert exec_start is not None
    assert Path(exec_start.group(1)).name == script
    for setting in ("EnvironmentFile=", "Restart=always", "NoNewPrivileges=yes", "User="):
        assert setting in text, f"{unit}: {setting}"


def cli_help(script: str, module: str) -> str:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not written yet")
    path = shutil.which(script, path=str(Path(sys.executable).parent))
    assert path is not None, f"{script} is not installed in the virtualenv"
    return subprocess.run(
        [path, "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.mark.parametrize("name", DAEMONS)
def test_compose_flags_exist_in_the_commands(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    cmd = command(services[name])
    module = "cdc.cli" if cmd[0] == "cdc-relay" else "generator.cli"
    text = cli_help(cmd[0], module)
    for flag in (part for part in cmd[1:] if part.startswith("--")):
        assert flag in text, f"{cmd[0]} --help does not mention {flag}"


def compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


@pytest.mark.parametrize("profile", [[], ["--profile", "kea"]], ids=["default", "kea"])
def test_docker_compose_accepts_the_file(profile: list[str]) -> None:
    cli = compose_cli()
    if cli is None:
        if IN_CI:
            pytest.fail("docker-compose is required under CI=true (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [*cli, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MACHINEDB_DB_PASSWORD": "test"},
    )
    assert result.returncode == 0, result.stderr
