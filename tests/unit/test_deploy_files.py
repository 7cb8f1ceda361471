"""CI check of the deployment files: there is no Docker engine on the build machines, so
docker-compose.yml, the Dockerfiles and the systemd units are held to the contract here.

The compose services must run the console scripts from pyproject.toml with the
environment variables the README documents, wait for their dependencies in the right
state, and mount only files that exist, or the secrets that scripts/compose-secrets
writes (checked here by running it). ``docker-compose config`` (Debian's
docker-compose, client side only) validates the file against the compose
specification when it is installed.
"""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc import cli as relay_cli
from generator import cli as generator_cli
from machinedb import stomp_url
from tests.integration import kea_hosts_support

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SECRETS = ROOT / "scripts" / "compose-secrets"
IN_CI = os.environ.get("CI", "").lower() == "true"
DHCPD = "/usr/sbin/dhcpd"

DAEMONS = (
    "relay",
    "generator",
    "generator-kea",
    "generator-a",
    "generator-b",
    "generator-kea-a",
    "generator-kea-b",
)
APP_SERVICES = ("migrate", *DAEMONS, "kea-agent-config-a", "kea-agent-config-b")
GENERATORS = {
    "generator": "isc",
    "generator-kea": "kea",
    "generator-a": "isc",
    "generator-b": "isc",
    "generator-kea-a": "kea",
    "generator-kea-b": "kea",
}
# The failover pair (profile pair): each peer's generator, its dhcpd, its dhcp_server row.
PAIR_PEERS = (("generator-a", "dhcpd-a", "dhcp-a"), ("generator-b", "dhcpd-b", "dhcp-b"))
# The Kea HA pair (profile kea-pair): each server's side, its dhcp_server row and database.
KEA_PAIR_SIDES = (("a", "dhcp-a", "kea_a"), ("b", "dhcp-b", "kea_b"))
DEFAULT_DESTINATION = "/topic/VirtualTopic.machinedb.changes"
AMQ_NS = "{http://activemq.apache.org/schema/core}"
SECRETS_DIR = "${MACHINEDB_SECRETS_DIR:-./secrets}"
ACTIVEMQ_CONF = "/opt/apache-activemq/conf"
# scripts/compose-secrets output: file name -> mode
SECRET_FILES = {
    "credentials.properties": 0o600,
    "broker.p12": 0o600,
    "broker-ca.pem": 0o644,
    "relay.url": 0o600,
    "generator.url": 0o600,
    "omapi.key": 0o600,
}
APP_SECRETS = ("relay.url", "generator.url", "omapi.key")  # owned by the image's uid
OMAPI_KEY = re.compile(r'key omapi_key \{ algorithm hmac-md5; secret "([A-Za-z0-9+/=]+)"; \};\n')
OMAPI_PORT = 7911
BROKER_USER = {"relay": "relay", **{name: "generator" for name in GENERATORS}}


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
    """The variable names in the README's configuration table (DESIGN.md's contract) and
    in docs/deployment.md's tables."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    section += (ROOT / "docs" / "deployment.md").read_text()
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.MULTILINE))


def default_of(value: str) -> str:
    """``value`` with each ``${VAR:-default}`` replaced by its default, as compose does
    when VAR is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


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


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Every volume of a service in the long form: type, source, target, read_only."""
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            result.append({"read_only": False, **volume})
            continue
        source, target, *mode = volume.split(":")
        kind = "bind" if source.startswith((".", "/", "$")) else "volume"
        result.append(
            {"type": kind, "source": source, "target": target, "read_only": mode == ["ro"]}
        )
    return result


def mount_for(service: dict[str, Any], target: str) -> dict[str, Any]:
    found = [m for m in mounts(service) if m["target"] == target]
    assert len(found) == 1, f"{target} is mounted {len(found)} times"
    return found[0]


def secret_name(mount: dict[str, Any]) -> str | None:
    """The file name in the secrets directory a mount reads, or None for other mounts."""
    source = str(mount["source"])
    if not source.startswith(SECRETS_DIR + "/"):
        return None
    return source.removeprefix(SECRETS_DIR + "/")


def declared_queues(config: str = "activemq-secure.xml") -> set[str]:
    tree = ET.parse(ROOT / "deploy" / "activemq" / config)
    return {q.get("physicalName", "") for q in tree.iter(f"{AMQ_NS}queue")}


def run_compose_secrets(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Not root: give the URL files to ourselves (the containers' uid needs root).
    owner = [] if os.geteuid() == 0 else ["--app-uid", str(os.geteuid())]
    return subprocess.run(
        [sys.executable, str(COMPOSE_SECRETS), "--dir", str(directory), *owner, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_properties(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="latin-1").splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {key.strip(): value for key, value in pairs}


def need_openssl() -> None:
    if shutil.which("openssl") is None:
        if IN_CI:
            pytest.fail("openssl is required under CI=true")
        pytest.skip("openssl is not installed")


@pytest.fixture(scope="module")
def generated_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_openssl()
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    done = run_compose_secrets(directory)
    assert done.returncode == 0, done.stderr
    return directory


def test_all_services_exist(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", "activemq", *APP_SERVICES, "dhcpd", "kea", "dhcpd-a", "dhcpd-b"}
    assert expected <= set(services)
    for name in ("generator-a", "generator-b", "dhcpd-a", "dhcpd-b"):
        assert services[name]["profiles"] == ["pair"], name
    for side, _, _ in KEA_PAIR_SIDES:
        for kind in ("kea-db-init", "generator-kea", "kea", "kea-agent-config", "kea-agent"):
            assert services[f"{kind}-{side}"]["profiles"] == ["kea-pair"], f"{kind}-{side}"
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
    # NAME_FILE: the value read from a file (machinedb.secrets, both commands).
    assert set(env) <= documented_variables() | {"STOMP_URL_FILE"}
    assert "DATABASE_URL" in env
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["CDC_DESTINATION"] == DEFAULT_DESTINATION
    # The broker URL carries a password: from a mounted file, never the environment
    # (and setting both is an error in the commands).
    assert "STOMP_URL" not in env
    if name in DAEMONS:
        assert "STOMP_URL_FILE" in env
    else:
        assert "STOMP_URL_FILE" not in env, "the migration does not talk to the broker"


def test_the_readme_documents_the_design_variables() -> None:
    assert {"DATABASE_URL", "STOMP_URL", "CDC_DESTINATION", "DHCP_CONSUMER"} <= (
        documented_variables()
    )


def test_no_password_is_written_inline(compose: dict[str, Any]) -> None:
    """Database passwords come from the environment or .env (the only literal is the dev
    default); broker passwords only from the secrets files, with no default at all."""
    lines = COMPOSE_FILE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for url in re.findall(r"(?:postgresql|stomp(?:\+ssl)?)://[^\s\"',]+", text):
        password = re.match(r"[a-z+]+://[^:/@]+:([^@]+)@", url)
        if password:
            assert password.group(1) in {
                "${MACHINEDB_DB_PASSWORD:-machinedb-dev}",
                "${MACHINEDB_KEA_WRITER_PASSWORD:-kea-writer-dev}",  # Kea's hosts database
            }, url
    assert not re.search(r"stomp(\+ssl)?://", text), "a broker URL belongs in the URL files"
    postgres_env = environment(compose["services"]["postgres"])
    assert postgres_env["POSTGRES_PASSWORD"] == "${MACHINEDB_DB_PASSWORD:-machinedb-dev}"
    for name, service in compose["services"].items():
        words = [*command(service)] if "command" in service else []
        words += [f"{k}={v}" for k, v in environment(service).items()]
        words += [str(part) for part in service.get("healthcheck", {}).get("test", [])]
        for word in words:
            assert not re.search(r"machinedb\.[a-z.]*password", word), f"{name}: {word}"
            assert not re.search(r"(?:login|passcode):\S", word), f"{name}: {word}"


def test_dependencies_wait_for_the_right_state(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in DAEMONS:
        # a Kea generator waits for its own hosts database
        kea_db = {
            name.replace("generator-kea", "kea-db-init"): {
                "condition": "service_completed_successfully"
            }
        }
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "activemq": {"condition": "service_healthy"},
            **(kea_db if name.startswith("generator-kea") else {}),
        }, name


def test_health_checks(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    # A CONNECT without credentials must get the authentication plugin's ERROR: the
    # broker answers STOMP, and it is not running open (CONNECTED would be unhealthy).
    # tests/integration/test_compose_secrets.py runs this check against real brokers.
    activemq_check = " ".join(services["activemq"]["healthcheck"]["test"])
    assert "/dev/tcp/127.0.0.1/61613" in activemq_check
    assert "ERROR" in activemq_check
    assert "password is invalid" in activemq_check
    assert "CONNECTED" not in activemq_check
    for name in ("dhcpd", "kea"):
        assert services[name]["healthcheck"]["test"], name


def test_activemq_runs_the_secure_config_and_a_persistent_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    activemq = services["activemq"]
    conf = mount_for(activemq, f"{ACTIVEMQ_CONF}/activemq.xml")
    assert conf["read_only"]
    secure = ROOT / "deploy" / "activemq" / "activemq-secure.xml"
    assert (ROOT / conf["source"]).resolve() == secure
    data = mount_for(activemq, "/opt/apache-activemq/data")
    assert data["source"] in compose["volumes"]
    args = activemq["command"]
    assert f"-Dactivemq.conf={ACTIVEMQ_CONF}" in args
    assert "-Dactivemq.data=/opt/apache-activemq/data" in args
    assert "-Dmachinedb.stomp.port=61613" in args
    assert "-Dmachinedb.stomps.port=61614" in args
    assert f"xbean:file:{ACTIVEMQ_CONF}/activemq.xml" in args
    # Plain STOMP stays on the container's loopback (the secure config's default); the
    # TLS connector listens on every address of the compose network.
    assert not [a for a in args if a.startswith("-Dmachinedb.stomp.bind=")]
    assert not [a for a in args if a.startswith("-Dmachinedb.stomps.bind=")]
    assert "${machinedb.stomps.bind:0.0.0.0}" in secure.read_text()
    assert "ports" not in activemq, "the broker is for the compose network only"


def test_activemq_mounts_its_secrets_read_only_where_the_config_reads_them(
    services: dict[str, dict[str, Any]],
) -> None:
    activemq = services["activemq"]
    text = (ROOT / "deploy" / "activemq" / "activemq-secure.xml").read_text()
    assert "file:${activemq.conf}/credentials.properties" in text
    assert "${machinedb.ssl.keystore:${activemq.conf}/broker.p12}" in text
    assert not [a for a in activemq["command"] if a.startswith("-Dmachinedb.ssl.keystore")]
    for name in ("credentials.properties", "broker.p12"):
        mount = mount_for(activemq, f"{ACTIVEMQ_CONF}/{name}")
        assert mount["type"] == "bind"
        assert mount["read_only"] is True, name
        assert secret_name(mount) == name


@pytest.mark.parametrize("name", DAEMONS)
def test_broker_clients_use_tls_a_ca_file_and_a_url_file(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    ca = option(command(service), "--ssl-ca-file")
    assert ca is not None, f"{name} must verify the broker against the generated CA"
    ca_mount = mount_for(service, ca)
    assert secret_name(ca_mount) == "broker-ca.pem"
    url_mount = mount_for(service, environment(service)["STOMP_URL_FILE"])
    assert secret_name(url_mount) == f"{BROKER_USER[name]}.url"
    for mount in (ca_mount, url_mount):
        assert mount["type"] == "bind"
        assert mount["read_only"] is True


def test_generator_and_dhcpd_share_the_omapi_key_at_one_path(
    services: dict[str, dict[str, Any]],
) -> None:
    """The generator renders `include "<its DHCP_OMAPI_KEY_FILE>";` into dhcpd.conf, so
    dhcpd must find the key at the very same path; nothing else gets the key."""
    env = environment(services["generator"])
    key_file = env["DHCP_OMAPI_KEY_FILE"]
    holders = ("generator", "dhcpd", "generator-a", "dhcpd-a", "generator-b", "dhcpd-b")
    for name in holders:
        assert environment(services[name]).get("DHCP_OMAPI_KEY_FILE", key_file) == key_file
        mount = mount_for(services[name], key_file)
        assert secret_name(mount) == "omapi.key", name
        assert mount["type"] == "bind"
        assert mount["read_only"] is True, name
    for name, service in services.items():
        if name not in holders:
            assert not [m for m in mounts(service) if secret_name(m) == "omapi.key"], name
    assert "DHCP_OMAPI_KEY_FILE" not in environment(services["generator-kea"])


def test_generator_reaches_omapi_over_a_network_of_its_own(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """dhcpd runs on the host's network and its OMAPI listener binds every address of
    the host. The generator reaches it at the host's address on the `omapi` bridge, which
    no other service joins and whose interface name the documented firewall rule uses."""
    host, _, port = default_of(environment(services["generator"])["DHCP_OMAPI"]).rpartition(":")
    assert int(port) == OMAPI_PORT
    network = compose["networks"]["omapi"]
    bridge = network["driver_opts"]["com.docker.network.bridge.name"]
    (ipam,) = network["ipam"]["config"]
    assert default_of(ipam["gateway"]) == host
    assert ipaddress.ip_address(host) in ipaddress.ip_network(default_of(ipam["subnet"]))
    members = [name for name, service in services.items() if "omapi" in service.get("networks", [])]
    assert members == ["generator"]
    assert "default" in services["generator"]["networks"], "it still needs the broker and DB"
    assert services["dhcpd"]["network_mode"] == "host"
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    assert f'iifname "{bridge}"' in deployment and f"dport {OMAPI_PORT}" in deployment


def test_secret_mounts_fail_when_the_file_is_missing(compose: dict[str, Any]) -> None:
    """Short-syntax binds create a missing source as an empty directory; long-syntax
    binds make container creation fail, so without secrets the stack does not start."""
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                assert not volume.startswith(SECRETS_DIR), f"{name}: {volume}"
                continue
            if secret_name(volume) is not None:
                assert volume["type"] == "bind", name
                assert volume.get("bind", {}).get("create_host_path") is not True, name


def test_compose_mounts_what_compose_secrets_writes(
    compose: dict[str, Any], generated_secrets: Path
) -> None:
    mounted = {
        secret_name(m)
        for service in compose["services"].values()
        for m in mounts(service)
        if secret_name(m) is not None
    }
    assert mounted == set(SECRET_FILES)
    assert {p.name for p in generated_secrets.iterdir()} == set(SECRET_FILES)


def test_the_secrets_directory_is_not_in_git() -> None:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "/secrets/" in lines
    if shutil.which("git") and (ROOT / ".git").exists():
        done = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", "secrets/relay.url"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0
    # The application image copies named paths only, so no secret can end up in it.
    for dockerfile in dockerfiles():
        for line in dockerfile.read_text().splitlines():
            assert not re.match(r"(COPY|ADD)\s+(--\S+\s+)*\.\s", line), f"{dockerfile}: {line}"


BROKER_CONFIGS = (
    "activemq.xml",
    "activemq-secure.xml",
    "activemq-pair.xml",
    "activemq-pair-secure.xml",
)


def profile_generators(services: dict[str, dict[str, Any]]) -> list[str]:
    """The generators that run only with a compose profile (kea, pair, ...)."""
    return [name for name in GENERATORS if services[name].get("profiles")]


@pytest.mark.parametrize("config", BROKER_CONFIGS)
def test_only_the_default_generators_queue_is_declared(
    services: dict[str, dict[str, Any]], config: str
) -> None:
    """Every broker config declares the default generator's queue, and no profile
    generator's. A declared queue takes a copy of every change whether or not anything
    reads it: one whose profile never runs grows until the broker's store limit blocks
    the relay, and the whole pipeline stops. A generator needs no declared queue: it
    subscribes (which makes its queue) before its first full read of the database, so
    what was published before is in that read and what comes after waits in its queue,
    also while it is stopped (tests/integration/test_undeclared_queue.py, on ActiveMQ
    and RabbitMQ)."""
    topic = DEFAULT_DESTINATION.removeprefix("/topic/")
    assert "profiles" not in services["generator"]
    default = environment(services["generator"])["DHCP_CONSUMER"]
    assert declared_queues(config) == {f"Consumer.{default}.{topic}"}
    assert profile_generators(services), "the profiles have generators of their own"
    for name in profile_generators(services):
        consumer = environment(services[name])["DHCP_CONSUMER"]
        assert f"Consumer.{consumer}.{topic}" not in declared_queues(config), name
    assert re.search(
        r'<storeUsage limit="\d+ gb"/>', (ROOT / "deploy" / "activemq" / config).read_text()
    )


def test_the_docs_say_which_queues_to_declare() -> None:
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    section = deployment.split("\n## Consumer queues\n", 1)[1].split("\n## ", 1)[0]
    assert "Declare a queue only for a consumer you run." in section
    assert "store" in section and "cdc_outbox_backlog" in section  # what a full one does
    assert "rabbitmqctl list_queues name messages consumers" in section  # its depth
    assert '"browser": "true"' in section
    assert "test_undeclared_queue.py" in section
    for doc in ("deployment.md", "operations.md", "generator.md", "security.md"):
        text = (ROOT / "docs" / doc).read_text()
        assert "Declare every consumer" not in text and "Declare its queue in" not in text, doc


def test_open_and_secure_broker_configs_declare_the_same_queues() -> None:
    assert declared_queues("activemq.xml") == declared_queues("activemq-secure.xml")


def test_generators_use_distinct_consumers(services: dict[str, dict[str, Any]]) -> None:
    consumers = [environment(services[name])["DHCP_CONSUMER"] for name in GENERATORS]
    assert len(set(consumers)) == len(consumers)


@pytest.mark.parametrize(
    ("name", "server"),
    [("generator", "dhcpd"), ("generator-kea", "kea"), ("generator-a", "dhcpd-a"),
     ("generator-b", "dhcpd-b"), ("generator-kea-a", "kea-a"), ("generator-kea-b", "kea-b")],
)  # fmt: skip
def test_generator_writes_where_its_server_reads(
    services: dict[str, dict[str, Any]], name: str, server: str
) -> None:
    generator, dhcp = services[name], services[server]
    cmd = command(generator)
    assert option(cmd, "--format") == GENERATORS[name]
    output = option(cmd, "--output")
    assert output is not None
    volume = next(m["source"] for m in mounts(generator) if output.startswith(m["target"]))
    assert any(m["source"] == volume for m in mounts(dhcp))
    conf_var = "KEA_CONF" if server.startswith("kea") else "DHCPD_CONF"
    assert environment(dhcp)[conf_var] == output
    if set(dhcp.get("profiles", [])) <= {"kea"}:  # the pairs run on bridges of their own
        assert dhcp["network_mode"] == "host"
    if server.startswith("dhcpd"):
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
    """Files from the repository exist; secrets are checked against compose-secrets."""
    named = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for mount in mounts(service):
            source = str(mount["source"])
            if secret_name(mount) is not None:
                assert secret_name(mount) in SECRET_FILES, f"{name}: {source}"
            elif source.startswith((".", "/")):
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


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, continuation lines joined."""
    settings: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_dhcpd_unit_stops_with_sigterm_and_reports_its_start() -> None:
    """The dhcpd unit the generator restarts: SIGTERM (immediate in dhcpd 4.4.3-P1, which
    has no handler; bench/dhcpd_restart.py) with a bounded escalation, and a forking
    start, so `systemctl restart` fails when the new dhcpd does not serve."""
    text = (ROOT / "deploy" / "systemd" / "isc-dhcp-server-machinedb.service").read_text()
    unit = unit_settings(text)
    assert unit["Type"] == ["forking"]
    assert unit["KillSignal"] == ["SIGTERM"]
    assert 0 < int(unit["TimeoutStopSec"][0]) <= 10
    assert unit["SendSIGKILL"] == ["yes"]
    assert unit["Conflicts"] == ["isc-dhcp-server.service"]
    (exec_start,) = unit["ExecStart"]
    words = exec_start.split()
    assert words[0] == DHCPD and "-f" not in words, "forking: dhcpd's parent reports the start"
    assert option(words, "-pf") == unit["PIDFile"][0]
    assert any("-t" in pre.split() for pre in unit["ExecStartPre"])
    assert "bench/dhcpd_restart.py" in text, "the measured reason is written down"


def test_systemd_generator_unit_documents_omapi() -> None:
    text = (ROOT / "deploy" / "systemd" / "dhcp-generator@.service").read_text()
    assert f"DHCP_OMAPI=127.0.0.1:{OMAPI_PORT}" in text
    assert "DHCP_OMAPI_KEY_FILE=/etc/machinedb/omapi.key" in text
    assert "systemctl restart isc-dhcp-server-machinedb" in text


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


@pytest.mark.parametrize(
    "profile",
    [[], ["--profile", "kea"], ["--profile", "pair"], ["--profile", "kea-pair"]],
    ids=["default", "kea", "pair", "kea-pair"],
)
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


# ---------------------------------------------------------------- scripts/compose-secrets


def test_compose_secrets_is_executable_and_documents_its_files() -> None:
    assert os.access(COMPOSE_SECRETS, os.X_OK)
    done = subprocess.run(
        [str(COMPOSE_SECRETS), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    for name in SECRET_FILES:
        assert name in done.stdout, f"--help does not say where {name} goes"
    assert "--force" in done.stdout


def test_compose_secrets_writes_the_files_with_their_modes(generated_secrets: Path) -> None:
    assert stat.S_IMODE(generated_secrets.stat().st_mode) == 0o700
    for name, mode in SECRET_FILES.items():
        path = generated_secrets / name
        assert path.is_file(), name
        assert stat.S_IMODE(path.stat().st_mode) == mode, name
    if os.geteuid() == 0:  # the application image's user must own its files
        for name in APP_SECRETS:
            owner = (generated_secrets / name).stat()
            assert (owner.st_uid, owner.st_gid) == (10001, 10001), name


def test_compose_secrets_credentials_and_urls_agree(generated_secrets: Path) -> None:
    properties = read_properties(generated_secrets / "credentials.properties")
    keys = {f"machinedb.{u}.password" for u in ("relay", "generator", "admin")}
    assert set(properties) == keys | {"machinedb.ssl.keystore.password"}
    values = list(properties.values())
    assert len(set(values)) == len(values), "every password is its own"
    for value in values:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", value), "random, and needs no escaping"
    for user in ("relay", "generator"):
        url = (generated_secrets / f"{user}.url").read_text().strip()
        config = stomp_url.parse(url)
        assert [(e.host, e.port, e.ssl) for e in config.endpoints] == [("activemq", 61614, True)]
        assert config.username == user
        assert config.password == properties[f"machinedb.{user}.password"]


def test_compose_secrets_omapi_key_is_a_dhcpd_key_statement(generated_secrets: Path) -> None:
    text = (generated_secrets / "omapi.key").read_text()
    match = OMAPI_KEY.fullmatch(text)
    assert match is not None, 'key omapi_key { algorithm hmac-md5; secret "..."; };'
    assert len(base64.b64decode(match.group(1), validate=True)) == 64
    if not Path(DHCPD).exists():
        return
    # dhcpd accepts it as the generator renders it: the port, the include, the key name.
    conf = generated_secrets.parent / "omapi-check.conf"
    conf.write_text(
        f'omapi-port {OMAPI_PORT};\ninclude "{generated_secrets / "omapi.key"}";\n'
        "omapi-key omapi_key;\nsubnet 192.0.2.0 netmask 255.255.255.0 { }\n"
    )
    done = subprocess.run(
        [DHCPD, "-4", "-t", "-q", "-cf", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_compose_secrets_adds_an_omapi_key_to_an_existing_directory(tmp_path: Path) -> None:
    need_openssl()
    directory = tmp_path / "secrets"
    assert run_compose_secrets(directory).returncode == 0
    (directory / "omapi.key").unlink()  # a directory made before the key existed
    before = {name: (directory / name).read_bytes() for name in SECRET_FILES if name != "omapi.key"}
    added = run_compose_secrets(directory, "--omapi-key-only")
    assert added.returncode == 0, added.stderr
    key = (directory / "omapi.key").read_text()
    assert OMAPI_KEY.fullmatch(key)
    assert stat.S_IMODE((directory / "omapi.key").stat().st_mode) == 0o600
    assert {name: (directory / name).read_bytes() for name in before} == before
    again = run_compose_secrets(directory, "--omapi-key-only")
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert (directory / "omapi.key").read_text() == key
    forced = run_compose_secrets(directory, "--omapi-key-only", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (directory / "omapi.key").read_text() != key
    secret = OMAPI_KEY.fullmatch(key)
    assert secret is not None
    for out in (added, again, forced):
        assert secret.group(1) not in out.stdout + out.stderr, "the secret is never printed"


def test_compose_secrets_keystore_opens_with_its_password(generated_secrets: Path) -> None:
    password = read_properties(generated_secrets / "credentials.properties")[
        "machinedb.ssl.keystore.password"
    ]
    env = {**os.environ, "STOREPASS": password}
    store = str(generated_secrets / "broker.p12")
    keytool = shutil.which("keytool")
    if keytool:  # what the broker (Java) sees
        listing = subprocess.run(
            [keytool, "-list", "-storetype", "PKCS12", "-keystore", store,
             "-storepass:env", "STOREPASS"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert "PrivateKeyEntry" in listing.stdout
        wrong = subprocess.run(
            [keytool, "-list", "-storetype", "PKCS12", "-keystore", store,
             "-storepass:env", "STOREPASS"],
            env={**env, "STOREPASS": "wrong-password"}, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert wrong.returncode != 0
    # The broker's certificate, from the keystore, verifies against the clients' CA
    # file for the compose service name.
    cert = subprocess.run(
        ["openssl", "pkcs12", "-in", store, "-passin", "env:STOREPASS", "-clcerts", "-nokeys"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cert.returncode == 0, cert.stderr
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(generated_secrets / "broker-ca.pem"),
         "-verify_hostname", "activemq", "-purpose", "sslserver"],
        input=cert.stdout, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    tls_keys = [p.name for p in generated_secrets.glob("*.key") if p.name != "omapi.key"]
    assert not tls_keys, "no private key outside the keystore"


def test_compose_secrets_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    need_openssl()
    directory = tmp_path / "secrets"
    first = run_compose_secrets(directory)
    assert first.returncode == 0, first.stderr
    before = {name: (directory / name).read_bytes() for name in SECRET_FILES}
    again = run_compose_secrets(directory)
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert {name: (directory / name).read_bytes() for name in SECRET_FILES} == before
    forced = run_compose_secrets(directory, "--force", "--host", "mq.example.org")
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in directory.iterdir()) == sorted(SECRET_FILES)
    for name in SECRET_FILES:
        assert (directory / name).read_bytes() != before[name], name
    url = stomp_url.parse((directory / "relay.url").read_text().strip())
    assert url.endpoints[0].host == "mq.example.org"
    # Passwords and the OMAPI secret are never printed.
    values = list(read_properties(directory / "credentials.properties").values())
    key = OMAPI_KEY.fullmatch((directory / "omapi.key").read_text())
    assert key is not None
    for value in [*values, key.group(1)]:
        for out in (first, again, forced):
            assert value not in out.stdout + out.stderr


def test_compose_secrets_refuses_a_partial_directory(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    directory.mkdir()
    (directory / "broker.p12").write_bytes(b"an operator's own keystore")
    done = run_compose_secrets(directory)
    assert done.returncode == 1
    assert "broker.p12" in done.stderr
    assert [p.name for p in directory.iterdir()] == ["broker.p12"]


# ---------------------------------------------------------------- compose x the commands


def container_to_host(service: dict[str, Any], path: str, secrets_dir: Path) -> str:
    """Where a container path of a secret mount is, with the generated secrets."""
    name = secret_name(mount_for(service, path))
    assert name is not None
    return str(secrets_dir / name)


@pytest.mark.parametrize("name", DAEMONS)
def test_the_commands_accept_the_compose_configuration(
    services: dict[str, dict[str, Any]],
    generated_secrets: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """Each daemon's own settings loader, given the compose command and environment
    (container paths mapped to the generated files), gets TLS, its user and the CA."""
    service = services[name]
    env = environment(service)
    env["DATABASE_URL"] = "postgresql://machinedb:x@postgres:5432/machinedb"
    env["STOMP_URL_FILE"] = container_to_host(service, env["STOMP_URL_FILE"], generated_secrets)
    if "DHCP_OMAPI_KEY_FILE" in env:
        path = container_to_host(service, env["DHCP_OMAPI_KEY_FILE"], generated_secrets)
        env["DHCP_OMAPI_KEY_FILE"] = path
    env = {key: default_of(value) for key, value in env.items()}
    cmd = command(service)
    ca_index = cmd.index("--ssl-ca-file") + 1
    cmd[ca_index] = container_to_host(service, cmd[ca_index], generated_secrets)
    for variable in (
        "STOMP_URL",
        "SSL_CA_FILE",
        "DATABASE_URL_FILE",
        "DHCP_OMAPI",
        "DHCP_OMAPI_KEY_FILE",
    ):
        monkeypatch.delenv(variable, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if cmd[0] == "cdc-relay":
        relay_settings = relay_cli.load_settings(relay_cli.build_parser().parse_args(cmd[1:]))
        broker, ca_file = relay_settings.broker, relay_settings.ssl_ca_file
    else:
        args = generator_cli.build_parser().parse_args(cmd[1:])
        generator_settings = generator_cli.load_settings(args, dict(os.environ))
        assert generator_settings.stomp_url is not None
        broker = stomp_url.parse(generator_settings.stomp_url)
        ca_file = generator_settings.ssl_ca_file
    assert all(e.ssl and e.host == "activemq" and e.port == 61614 for e in broker.endpoints)
    assert broker.username == BROKER_USER[name]
    assert broker.password
    assert ca_file == str(generated_secrets / "broker-ca.pem")


# ---- the ActiveMQ master/slave pair (profile activemq-pair) -------------------------------

PAIR = ("activemq-a", "activemq-b")
PAIR_STORE = "/var/lib/machinedb/kahadb"


def kahadb(config: str) -> ET.Element:
    tree = ET.parse(ROOT / "deploy" / "activemq" / config)
    found = list(tree.iter(f"{AMQ_NS}kahaDB"))
    assert len(found) == 1, config
    return found[0]


@pytest.mark.parametrize("config", ["activemq-pair.xml", "activemq-pair-secure.xml"])
def test_pair_configs_share_one_kahadb_with_fast_lock_checks(config: str) -> None:
    store = kahadb(config)
    assert store.get("directory") == "${machinedb.kahadb}"  # no default: required
    assert store.get("lockKeepAlivePeriod") == "1000"
    lockers = list(store.iter(f"{AMQ_NS}shared-file-locker"))
    assert [locker.get("lockAcquireSleepInterval") for locker in lockers] == ["1000"]
    assert declared_queues(config) == declared_queues("activemq.xml")


def test_the_secure_pair_config_is_the_secure_config_with_the_shared_store() -> None:
    def without_store(config: str) -> str:
        tree = ET.parse(ROOT / "deploy" / "activemq" / config)
        broker = next(tree.iter(f"{AMQ_NS}broker"))
        broker.remove(next(broker.iter(f"{AMQ_NS}persistenceAdapter")))
        for element in tree.iter():  # layout and comments aside
            element.text = (element.text or "").strip()
            element.tail = (element.tail or "").strip()
        return ET.tostring(tree.getroot(), encoding="unicode")

    assert without_store("activemq-pair-secure.xml") == without_store("activemq-secure.xml")


def test_the_pair_profile_runs_two_brokers_on_one_shared_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    single = command(services["activemq"])
    stores, data = set(), set()
    for name in PAIR:
        member = services[name]
        assert member["profiles"] == ["activemq-pair"]
        assert member["image"] == services["activemq"]["image"]
        cmd = command(member)
        assert f"-Dmachinedb.kahadb={PAIR_STORE}" in cmd
        assert [c for c in cmd if c != f"-Dmachinedb.kahadb={PAIR_STORE}"] == single
        conf = mount_for(member, f"{ACTIVEMQ_CONF}/activemq.xml")
        assert conf["source"] == "./deploy/activemq/activemq-pair-secure.xml"
        assert conf["read_only"]
        for secret in ("credentials.properties", "broker.p12"):
            mount = mount_for(member, f"{ACTIVEMQ_CONF}/{secret}")
            assert secret_name(mount) == secret and mount["read_only"]
        stores.add(mount_for(member, PAIR_STORE)["source"])
        data.add(mount_for(member, "/opt/apache-activemq/data")["source"])
        assert "ports" not in member, "the brokers are for the compose network only"
    assert len(stores) == 1 and stores <= set(compose["volumes"])
    assert len(data) == 2 and data <= set(compose["volumes"])
    assert not stores & data


def test_the_pair_is_documented() -> None:
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    reliability = (ROOT / "docs" / "reliability.md").read_text()
    for text in (deployment, reliability):
        assert "lockAcquireSleepInterval" in text and "lockKeepAlivePeriod" in text
        assert "NFSv3" in text
    assert "--profile activemq-pair" in deployment
    assert "scripts/services.py start pair" in deployment


# ---- the failover pair of ISC dhcpd peers (profile pair) -----------------------------------

PAIR_UP = "docker compose --profile pair up -d relay generator-a generator-b dhcpd-a dhcpd-b"


def test_each_peer_has_its_own_server_consumer_omapi_target_and_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Two generators, each rendering its own dhcp_server's side of the pair from its own
    durable queue into its own dhcpd's volume, and sending host changes to that dhcpd's
    OMAPI at its fixed address on the pair's bridge."""
    (ipam,) = compose["networks"]["dhcp-pair"]["ipam"]["config"]
    segment = ipaddress.ip_network(default_of(ipam["subnet"]))
    docker_range = ipaddress.ip_network(default_of(ipam["ip_range"]))
    gateway = ipaddress.ip_address(default_of(ipam["gateway"]))
    assert docker_range.subnet_of(segment)  # type: ignore[arg-type]
    seen: dict[str, set[object]] = {}
    for generator_name, dhcpd_name, server in PAIR_PEERS:
        generator, dhcpd = services[generator_name], services[dhcpd_name]
        env = {key: default_of(value) for key, value in environment(generator).items()}
        assert env["DHCP_SERVER"] == server
        assert env["DHCP_CONSUMER"] == server, "a pair's consumer is named after its server"
        address = ipaddress.ip_address(default_of(dhcpd["networks"]["dhcp-pair"]["ipv4_address"]))
        # a fixed address Docker never hands to another container
        assert address in segment and address not in docker_range and address != gateway
        host, _, port = env["DHCP_OMAPI"].rpartition(":")
        assert (ipaddress.ip_address(host), int(port)) == (address, OMAPI_PORT)
        assert sorted(generator["networks"]) == ["default", "dhcp-pair"]
        assert list(dhcpd["networks"]) == ["dhcp-pair"], "no way to the database or the broker"
        assert "network_mode" not in dhcpd and "ports" not in dhcpd
        config = mount_for(dhcpd, "/var/lib/machinedb/dhcp")["source"]
        assert mount_for(generator, "/var/lib/machinedb/dhcp")["source"] == config
        metrics_port = option(command(generator), "--metrics-port")
        assert generator["expose"] == [metrics_port]
        for key in ("build", "image", "healthcheck", "restart"):
            assert dhcpd[key] == services["dhcpd"][key], (dhcpd_name, key)
        values = {
            "server": server,
            "consumer": env["DHCP_CONSUMER"],
            "address": address,
            "config": config,
            "leases": mount_for(dhcpd, "/var/lib/dhcp")["source"],
            "metrics": metrics_port,
        }
        for key, value in values.items():
            seen.setdefault(key, set()).add(value)
    assert all(len(values) == 2 for values in seen.values()), seen
    pair_volumes = seen["config"] | seen["leases"]
    assert pair_volumes <= set(compose["volumes"])
    members = {name for peer in PAIR_PEERS for name in peer[:2]}
    for name, service in services.items():
        if name not in members:
            assert not {m["source"] for m in mounts(service)} & pair_volumes, name
    ports = [option(command(services[name]), "--metrics-port") for name in GENERATORS]
    assert len(set(ports)) == len(ports), "every generator's metrics port is its own"


def test_the_pair_generators_run_the_single_generators_command(
    services: dict[str, dict[str, Any]],
) -> None:
    def without_metrics_port(cmd: list[str]) -> list[str]:
        index = cmd.index("--metrics-port")
        return cmd[:index] + cmd[index + 2 :]

    single = without_metrics_port(command(services["generator"]))
    for name, _, _ in PAIR_PEERS:
        assert without_metrics_port(command(services[name])) == single, name
        assert services[name]["restart"] == "unless-stopped"


def test_the_pair_segment_is_a_bridge_with_a_fixed_name(compose: dict[str, Any]) -> None:
    network = compose["networks"]["dhcp-pair"]
    assert network["driver"] == "bridge"
    assert network["driver_opts"]["com.docker.network.bridge.name"] == "mdb-pair"
    assert "internal" not in network, "the peers serve clients on it"


def test_the_pair_profile_is_documented() -> None:
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert PAIR_UP in COMPOSE_FILE.read_text() and PAIR_UP in deployment
    assert "A failover pair of ISC dhcpd peers (or a Kea HA pair) is two servers: two" not in (
        deployment
    )
    for text in (deployment, operations):
        assert "dhcp_generator_clock_skew_seconds" in text
    assert "NTP" in operations and "ha-maintenance-start" in operations


# ---- the Kea HA pair (profile kea-pair) ----------------------------------------------------

KEA_PAIR_UP = (
    "docker compose --profile kea-pair up -d relay generator-kea-a generator-kea-b"
    " kea-a kea-b kea-agent-a kea-agent-b"
)
AGENT_CONF = "/var/lib/machinedb/dhcp/kea-ctrl-agent.conf"


def segment_address(service: dict[str, Any], network: str) -> ipaddress.IPv4Address:
    address = ipaddress.ip_address(default_of(service["networks"][network]["ipv4_address"]))
    assert isinstance(address, ipaddress.IPv4Address)
    return address


def test_each_kea_server_has_its_own_server_consumer_database_agent_and_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Two servers, each with a generator rendering its own dhcp_server's side from its
    own queue into its own Kea hosts database and config volume, its kea-dhcp4 reading
    them, and its kea-ctrl-agent at a fixed address (the pair row's) on the pair's
    bridge, sharing the control socket's volume and reading the config its one-shot
    writes."""
    (ipam,) = compose["networks"]["kea-pair"]["ipam"]["config"]
    segment = ipaddress.ip_network(default_of(ipam["subnet"]))
    docker_range = ipaddress.ip_network(default_of(ipam["ip_range"]))
    gateway = ipaddress.ip_address(default_of(ipam["gateway"]))
    assert docker_range.subnet_of(segment)  # type: ignore[arg-type]
    isc_consumers = {environment(services[name])["DHCP_CONSUMER"] for name, _, _ in PAIR_PEERS}
    seen: dict[str, set[object]] = {}
    for side, server, database in KEA_PAIR_SIDES:
        generator, kea = services[f"generator-kea-{side}"], services[f"kea-{side}"]
        agent, one_shot = services[f"kea-agent-{side}"], services[f"kea-agent-config-{side}"]
        init = services[f"kea-db-init-{side}"]
        env = {key: default_of(value) for key, value in environment(generator).items()}
        assert env["DHCP_SERVER"] == server
        assert env["DHCP_CONSUMER"] not in isc_consumers, "never a queue of the ISC pair's"
        # its own hosts database: made by its own init, written by its generator only,
        # read by its own kea-dhcp4
        assert environment(init)["KEA_DB_NAME"] == database
        writer = env["KEA_HOSTS_DATABASE_URL"]
        assert writer.startswith("postgresql://kea_writer:")
        assert writer.endswith(f"@postgres:5432/{database}")
        assert env["KEA_HOSTS_READER_URL"] == f"postgresql://kea_reader@postgres:5432/{database}"
        completed = {"condition": "service_completed_successfully"}
        assert generator["depends_on"][f"kea-db-init-{side}"] == completed
        assert kea["depends_on"] == {f"kea-db-init-{side}": completed}
        assert "KEA_DB_PASSWORD" in environment(kea)
        # the volumes: config (generator, kea, the one-shot, the agent read-only), the
        # control socket (generator, kea, agent), the leases (kea)
        config = mount_for(kea, "/var/lib/machinedb/dhcp")["source"]
        run = mount_for(kea, "/run/kea")["source"]
        leases = mount_for(kea, "/var/lib/kea")["source"]
        for service in (generator, one_shot, agent):
            assert mount_for(service, "/var/lib/machinedb/dhcp")["source"] == config
        assert mount_for(agent, "/var/lib/machinedb/dhcp")["read_only"]
        for service in (generator, agent):
            assert mount_for(service, "/run/kea")["source"] == run
        socket = option(command(generator), "--kea-control-socket")
        assert socket == option(command(one_shot), "--kea-control-socket")
        assert socket is not None and socket.startswith("/run/kea/")
        assert kea["healthcheck"]["test"] == ["CMD", "test", "-S", socket]
        # the agent's config: written by the one-shot for this server, where the agent
        # waits for it; the one-shot is started again until the pair row exists
        assert environment(one_shot)["DHCP_SERVER"] == server
        assert option(command(one_shot), "--kea-ctrl-agent-config") == AGENT_CONF
        assert option(command(one_shot), "--format") == "kea"
        assert environment(agent)["KEA_CTRL_AGENT_CONF"] == AGENT_CONF
        assert one_shot["restart"] == "on-failure"
        assert agent["entrypoint"] == ["/usr/local/bin/kea-ctrl-agent-entrypoint"]
        assert agent["depends_on"][f"kea-agent-config-{side}"] == {"condition": "service_started"}
        # the addresses: fixed ones Docker never hands out, the agent's apart from its
        # server's; kea-dhcp4 also on the compose network, for its database
        agent_address = segment_address(agent, "kea-pair")
        kea_address = segment_address(kea, "kea-pair")
        for address in (agent_address, kea_address):
            assert address in segment and address not in docker_range and address != gateway
        assert agent_address != kea_address
        assert list(agent["networks"]) == ["kea-pair"], "no way to the database or the broker"
        assert sorted(kea["networks"]) == ["default", "kea-pair"]
        assert "kea-pair" not in generator.get("networks", []), "it talks to the socket"
        for name, service in ((f"kea-{side}", kea), (f"kea-agent-{side}", agent)):
            assert "network_mode" not in service and "ports" not in service, name
            assert service["build"] == services["kea"]["build"], name
            assert service["image"] == services["kea"]["image"], name
            assert service["restart"] == "unless-stopped", name
        metrics_port = option(command(generator), "--metrics-port")
        assert generator["expose"] == [metrics_port]
        values = {
            "server": server,
            "consumer": env["DHCP_CONSUMER"],
            "database": database,
            "agent address": agent_address,
            "kea address": kea_address,
            "config": config,
            "run": run,
            "leases": leases,
            "metrics": metrics_port,
        }
        for key, value in values.items():
            seen.setdefault(key, set()).add(value)
    assert all(len(values) == 2 for values in seen.values()), seen
    pair_volumes = seen["config"] | seen["run"] | seen["leases"]
    assert pair_volumes <= set(compose["volumes"])
    members = {
        f"{kind}-{side}"
        for side, _, _ in KEA_PAIR_SIDES
        for kind in ("generator-kea", "kea", "kea-agent", "kea-agent-config")
    }
    for name, service in services.items():
        if name not in members:
            assert not {m["source"] for m in mounts(service)} & pair_volumes, name


def test_the_kea_pair_generators_run_the_kea_generators_command(
    services: dict[str, dict[str, Any]],
) -> None:
    def without_metrics_port(cmd: list[str]) -> list[str]:
        index = cmd.index("--metrics-port")
        return cmd[:index] + cmd[index + 2 :]

    single = without_metrics_port(command(services["generator-kea"]))
    for side, _, _ in KEA_PAIR_SIDES:
        name = f"generator-kea-{side}"
        assert without_metrics_port(command(services[name])) == single, name
        assert services[name]["restart"] == "unless-stopped"


def test_the_kea_pair_databases_are_made_one_after_the_other(
    services: dict[str, dict[str, Any]],
) -> None:
    """Both inits run db-init.sh as the kea profile's does, each for its own database;
    both make the logins kea_writer and kea_reader, so the second waits for the first."""
    single = services["kea-db-init"]
    for side, _, database in KEA_PAIR_SIDES:
        init = services[f"kea-db-init-{side}"]
        for key in ("build", "image", "entrypoint", "restart"):
            assert init[key] == single[key], (side, key)
        env = environment(init)
        assert env == {**environment(single), "KEA_DB_NAME": database}
        assert init["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["kea-db-init-b"]["depends_on"]["kea-db-init-a"] == {
        "condition": "service_completed_successfully"
    }


def test_the_kea_pair_segment_is_a_bridge_of_its_own(compose: dict[str, Any]) -> None:
    network = compose["networks"]["kea-pair"]
    assert network["driver"] == "bridge"
    assert network["driver_opts"]["com.docker.network.bridge.name"] == "mdb-kea-pair"
    assert "internal" not in network, "the servers serve clients on it"
    subnets = {
        name: ipaddress.ip_network(default_of(net["ipam"]["config"][0]["subnet"]))
        for name, net in compose["networks"].items()
        if net and "ipam" in net
    }
    for name, subnet in subnets.items():
        if name != "kea-pair":
            assert not subnet.overlaps(subnets["kea-pair"]), name  # type: ignore[arg-type]


def test_the_kea_image_runs_the_agent_and_no_stale_pid_file_stops_kea() -> None:
    """A pid file left by the previous start holds PID 1 (kea-dhcp4 or the agent, each
    PID 1 of its container), which the restarted daemon has itself: Kea 2.2 then
    refuses to start ("already running", tried). Both entrypoints empty a pid directory
    of their container's own before they start Kea."""
    dockerfile = (ROOT / "deploy" / "kea" / "Dockerfile").read_text()
    assert "kea-ctrl-agent" in dockerfile
    agent = ROOT / "deploy" / "kea" / "ctrl-agent-entrypoint.sh"
    assert "COPY ctrl-agent-entrypoint.sh /usr/local/bin/kea-ctrl-agent-entrypoint" in dockerfile
    assert os.access(agent, os.X_OK)
    for script in (agent, ROOT / "deploy" / "kea" / "entrypoint.sh"):
        text = script.read_text()
        assert text.startswith("#!/bin/bash\n") and "set -euo pipefail" in text
        assert re.search(r"^export KEA_PIDFILE_DIR=/run/kea-[a-z0-9-]+ ", text, re.MULTILINE)
        assert 'rm -rf "$KEA_PIDFILE_DIR"' in text
        assert text.index('rm -rf "$KEA_PIDFILE_DIR"') < text.index("exec /usr/sbin/kea-")
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert 'exec /usr/sbin/kea-ctrl-agent -c "$CONF"' in agent.read_text()


def test_the_kea_pair_profile_is_documented() -> None:
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert KEA_PAIR_UP in COMPOSE_FILE.read_text() and KEA_PAIR_UP in deployment
    section = deployment.split("\n## A Kea HA pair\n", 1)[1].split("\n## ", 1)[0]
    sql = section.split("```sql\n", 1)[1].split("```", 1)[0]
    assert "'kea-hot-standby'" in sql and "primary_port" in sql and "secondary_port" in sql
    assert "no Docker engine" in section
    assert "tests/integration/test_compose_kea_pair.py" in section
    assert "this profile does not run one" not in deployment
    assert "kea-pair" in operations and "9106" in operations


# ---- Kea's hosts database (profile kea) ----------------------------------------------------

KEA_DB_INIT = ROOT / "deploy" / "kea" / "db-init.sh"


def test_kea_db_init_runs_once_before_kea_and_its_generator(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["kea-db-init"]
    assert init["profiles"] == ["kea"]
    assert init["restart"] == "no"
    assert init["entrypoint"] == ["/usr/local/bin/kea-db-init"]
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = environment(init)
    assert env["PGHOST"] == "postgres"
    assert env["KEA_DB_NAME"] == "kea"  # a database of its own on the same PostgreSQL
    for name in ("kea", "generator-kea"):
        assert services[name]["depends_on"]["kea-db-init"]["condition"] == (
            "service_completed_successfully"
        ), name
    dockerfile = (ROOT / "deploy" / "kea" / "Dockerfile").read_text()
    assert "kea-admin" in dockerfile and "postgresql-client" in dockerfile
    assert "COPY db-init.sh /usr/local/bin/kea-db-init" in dockerfile
    assert os.access(KEA_DB_INIT, os.X_OK)


def test_kea_db_init_makes_the_schema_and_the_documented_grants() -> None:
    script = KEA_DB_INIT.read_text()
    assert 'kea-admin db-init pgsql -n "$DB"' in script
    assert 'kea-admin db-upgrade pgsql -n "$DB"' in script
    grants = [line for line in kea_hosts_support.GRANTS.strip().splitlines() if line]
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    for line in grants:  # one list of GRANTs: the tests', the script's and the docs'
        assert line in script, line
        assert line in deployment, line


def test_kea_reads_its_reservations_with_a_password_file_and_no_password_in_the_config(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    kea, generator = services["kea"], services["generator-kea"]
    entrypoint = (ROOT / "deploy" / "kea" / "entrypoint.sh").read_text()
    assert "KEA_DB_PASSWORD" in environment(kea)
    assert "export PGPASSFILE" in entrypoint and "umask 0077" in entrypoint
    env = {key: default_of(value) for key, value in environment(generator).items()}
    del env["STOMP_URL_FILE"]  # not what this test reads
    writer = env["KEA_HOSTS_DATABASE_URL"]
    assert writer.startswith("postgresql://kea_writer:") and writer.endswith("@postgres:5432/kea")
    reader = env["KEA_HOSTS_READER_URL"]
    assert reader == "postgresql://kea_reader@127.0.0.1:5433/kea"
    assert "127.0.0.1:${MACHINEDB_KEA_DB_PORT:-5433}:5432" in services["postgres"]["ports"]
    for variable in ("KEA_HOSTS_DATABASE_URL_FILE", "KEA_HOSTS_READER_URL"):
        monkeypatch.delenv(variable, raising=False)
    args = generator_cli.build_parser().parse_args(
        ["--format", "kea", "--database-url", "postgresql://m@h/m"]
    )
    loaded = generator_cli.load_settings(args, env)
    assert loaded.apply.kea_hosts_database == writer
    database = loaded.apply.options.kea_hosts_database
    assert database is not None
    assert (database.user, database.host, database.port, database.name) == (
        "kea_reader",
        "127.0.0.1",
        5433,
        "kea",
    )


# ---------------------------------------------------------------- docker-compose.rabbitmq.yml

RABBITMQ_OVERRIDE = ROOT / "docker-compose.rabbitmq.yml"
STOMP_URL_TARGET = "/run/secrets/machinedb/stomp-url"


@pytest.fixture(scope="module")
def rabbitmq_override() -> dict[str, Any]:
    data = yaml.safe_load(RABBITMQ_OVERRIDE.read_text())
    assert isinstance(data, dict)
    return data


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A service of docker-compose.yml with the override's entries, merged as compose
    merges them: environment and depends_on by key, volumes by target, the rest replaced."""
    result = {**base, **override}
    result["environment"] = {**environment(base), **environment(override)}
    result["depends_on"] = {**base.get("depends_on", {}), **override.get("depends_on", {})}
    by_target = {m["target"]: m for m in mounts(base)}
    by_target.update({m["target"]: m for m in mounts(override)})
    result["volumes"] = list(by_target.values())
    return result


def test_rabbitmq_runs_with_its_stomp_plugin_and_a_persistent_volume(
    rabbitmq_override: dict[str, Any],
) -> None:
    rabbitmq = rabbitmq_override["services"]["rabbitmq"]
    assert str(rabbitmq["image"]).startswith("rabbitmq:")
    assert "rabbitmq-plugins enable --offline rabbitmq_stomp" in " ".join(command(rabbitmq))
    assert "exec docker-entrypoint.sh rabbitmq-server" in " ".join(command(rabbitmq))
    assert rabbitmq["healthcheck"]["test"][-2:] == ["check_port_listener", "61613"]
    assert "ports" not in rabbitmq, "the broker is for the compose network only"
    data = mount_for(rabbitmq, "/var/lib/rabbitmq")
    assert data["type"] == "volume" and data["source"] in rabbitmq_override["volumes"]
    users = mount_for(rabbitmq, "/etc/rabbitmq/conf.d/90-machinedb.conf")
    assert users["type"] == "bind" and users["read_only"]
    assert secret_name(users) == "rabbitmq.conf"
    assert rabbitmq.get("hostname") == "rabbitmq", "a stable node name keeps its data"


def test_rabbitmq_clients_say_so_and_read_its_url_file(
    services: dict[str, dict[str, Any]], rabbitmq_override: dict[str, Any]
) -> None:
    overrides = rabbitmq_override["services"]
    for name in DAEMONS:
        service = merged(services[name], overrides[name])
        assert environment(service)["STOMP_BROKER"] == "rabbitmq", name
        url = mount_for(service, STOMP_URL_TARGET)
        assert secret_name(url) == "rabbitmq.url" and url["read_only"], name
        assert url["type"] == "bind", "a missing URL file must fail, not become a directory"
        assert service["depends_on"]["rabbitmq-queues"] == {
            "condition": "service_completed_successfully"
        }, name
        assert set(service["depends_on"]) >= {"migrate", "rabbitmq-queues"}, name
        assert service["image"] == services["migrate"]["image"], name
    # what STOMP_BROKER=rabbitmq means to the commands: the relay's --broker choices
    relay_args = relay_cli.build_parser().parse_args(["--broker", "rabbitmq"])
    assert relay_args.broker == "rabbitmq"
    queues = overrides["rabbitmq-queues"]
    assert queues["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    assert queues["restart"] == "no"
    assert secret_name(mount_for(queues, STOMP_URL_TARGET)) == "rabbitmq.url"


def test_rabbitmq_queues_declares_the_default_generators_queue_before_the_relay(
    services: dict[str, dict[str, Any]],
    rabbitmq_override: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Runs the one-shot's script against a stand-in for stomp.py: one declaring
    SUBSCRIBE per consumer it names, each waiting for its receipt; an ERROR fails it. It
    names the default generator's consumer only, as the ActiveMQ configs declare only
    its queue (test_only_the_default_generators_queue_is_declared says why)."""
    queues = rabbitmq_override["services"]["rabbitmq-queues"]
    env = environment(queues)
    consumers = env["MACHINEDB_CONSUMERS"].split()
    assert consumers == [environment(services["generator"])["DHCP_CONSUMER"]]
    for name in profile_generators(services):
        assert environment(services[name])["DHCP_CONSUMER"] not in consumers, name
    assert env["CDC_DESTINATION"] == DEFAULT_DESTINATION
    script = command(queues)[-1]
    url_file = tmp_path / "rabbitmq.url"
    url_file.write_text("stomp://machinedb:pw@rabbitmq:61613\n")
    monkeypatch.setenv("STOMP_URL_FILE", str(url_file))
    monkeypatch.setenv("CDC_DESTINATION", env["CDC_DESTINATION"])
    monkeypatch.setenv("MACHINEDB_CONSUMERS", env["MACHINEDB_CONSUMERS"])

    class Frame:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    made: list[Any] = []

    class FakeConnection:
        refuse = False

        def __init__(self, hosts: list[tuple[str, int]], *, vhost: str) -> None:
            self.hosts, self.vhost = hosts, vhost
            self.calls: list[tuple[str, Any]] = []
            self.listener: Any = None
            made.append(self)

        def set_listener(self, name: str, listener: Any) -> None:
            self.listener = listener

        def connect(self, user: str, password: str, *, wait: bool) -> None:
            self.calls.append(("connect", (user, password)))

        def subscribe(self, destination: str, **kwargs: Any) -> None:
            self.calls.append(("subscribe", (destination, kwargs)))
            if FakeConnection.refuse:
                self.listener.on_error(Frame({"message": "access refused"}))
            else:
                self.listener.on_receipt(Frame({"receipt-id": kwargs["headers"]["receipt"]}))

        def unsubscribe(self, **kwargs: Any) -> None:
            self.calls.append(("unsubscribe", kwargs))

        def disconnect(self) -> None:
            self.calls.append(("disconnect", None))

    fake = type(sys)("stomp")
    fake.Connection12 = FakeConnection  # type: ignore[attr-defined]
    fake.ConnectionListener = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stomp", fake)
    exec(compile(script, "rabbitmq-queues", "exec"), {"__name__": "__main__"})
    conn = made[-1]
    assert conn.hosts == [("rabbitmq", 61613)] and conn.vhost == "/"
    assert conn.calls[0] == ("connect", ("machinedb", "pw"))
    subscribes = [args for call, args in conn.calls if call == "subscribe"]
    topic = DEFAULT_DESTINATION.removeprefix("/topic/")
    assert [(dest, kw["headers"]["x-queue-name"]) for dest, kw in subscribes] == [
        (DEFAULT_DESTINATION, f"Consumer.{c}.{topic}") for c in consumers
    ]
    for _, kwargs in subscribes:
        assert kwargs["headers"]["durable"] == "true"
        assert kwargs["headers"]["auto-delete"] == "false"
    assert conn.calls[-1] == ("disconnect", None)
    FakeConnection.refuse = True
    with pytest.raises(SystemExit, match="access refused"):
        exec(compile(script, "rabbitmq-queues", "exec"), {"__name__": "__main__"})


def test_docker_compose_accepts_the_rabbitmq_override() -> None:
    cli = compose_cli()
    if cli is None:
        if IN_CI:
            pytest.fail("docker-compose is required under CI=true (apt-get install docker-compose)")
        pytest.skip("docker-compose is not installed")
    files = ["-f", str(COMPOSE_FILE), "-f", str(RABBITMQ_OVERRIDE)]
    for profile in ([], ["--profile", "kea"], ["--profile", "pair"], ["--profile", "kea-pair"]):
        result = subprocess.run(
            [*cli, "--project-directory", str(ROOT), *files, *profile, "config"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MACHINEDB_DB_PASSWORD": "test"},
        )
        assert result.returncode == 0, result.stderr
        relay = yaml.safe_load(result.stdout)["services"]["relay"]
        url = [v for v in relay["volumes"] if v["target"] == STOMP_URL_TARGET]
        assert len(url) == 1 and url[0]["source"].endswith("/rabbitmq.url"), url


def test_deployment_docs_name_the_rabbitmq_override() -> None:
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert "docker-compose.rabbitmq.yml" in docs
    for name in ("rabbitmq.conf", "rabbitmq.url"):
        assert name in docs, name
