"""Kea HA pairs: both servers' kea-dhcp4 configs from one pair row, identical but for
``this-server-name``; the hook libraries by absolute path, lease_cmds first; peers
primary first with the mode's roles; load-balancing pools split for the ``HA_<name>``
classes; explicit subnet ids; the kea-ctrl-agent config of each server where its
partner's config looks for it; a pair without a mode in hot-standby; refusals of a pair in the other server's mode; the real
kea-dhcp4 and kea-ctrl-agent accept the files, and kea-dhcp4 runs the hook with them."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator import (
    cli,
    errors,
    kea_control,
    model,
    render_isc,
    render_kea,
    render_kea_agent,
    render_kea_ha,
    render_options,
    validate,
)
from tests import waiting
from tests.unit.conftest import Checker, Golden, require_binary
from tests.unit.inventories import interface, subnet

OPTIONS = render_options.RenderOptions()
# The golden files name Debian's x86-64 hook directory, whatever this machine's is.
GOLDEN_OPTIONS = render_options.RenderOptions(kea_hooks_dir=render_options.KEA_HOOKS_FALLBACK)
HOOKS = render_options.KEA_HOOKS_DIR
NAMES = ("dhcp-a", "dhcp-b")
ADDRESSES = (ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv4Address("10.0.0.3"))
PORTS = (8001, 8002)
MODES = ("kea-hot-standby", "kea-load-balancing")
POOL = ("10.0.0.100", "10.0.0.200")
# The one value that differs between the two servers' kea-dhcp4 configs.
PER_SERVER = ("Dhcp4", "hooks-libraries", 1, "parameters", "high-availability", 0)
THIS_SERVER = (*PER_SERVER, "this-server-name")


def side(
    mode: str | None,
    role: str,
    *,
    names: tuple[str, str] = NAMES,
    addresses: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] = ADDRESSES,
    ports: tuple[int, int] = PORTS,
    **timers: int,
) -> model.Failover:
    """One server's side of the pair dhcp-ab (dhcp-a primary at .2:8001, dhcp-b .3:8002)."""
    mine, theirs = (0, 1) if role == "primary" else (1, 0)
    return model.Failover(
        name="dhcp-ab",
        mode=mode,
        role=role,
        server_name=names[mine],
        peer_name=names[theirs],
        address=addresses[mine],
        port=ports[mine],
        peer_address=addresses[theirs],
        peer_port=ports[theirs],
        mclt=3600,
        max_response_delay=60,
        max_unacked_updates=10,
        load_balance_max_seconds=3,
        split=128,
        **timers,
    )


def inventory(pair: model.Failover | None, *, pool: tuple[str, str] = POOL) -> model.Inventory:
    subnets = (
        subnet(7, "10.0.0.0/24", name="lan", gateway="10.0.0.1", pool=pool),
        subnet(3, "10.0.1.0/24", name="servers", gateway="10.0.1.1"),
    )  # fmt: skip
    interfaces = (
        interface(1, "web1", "02:00:00:00:00:01", "10.0.0.10"),
        interface(2, "db1", "02:00:00:00:00:02", "10.0.1.20"),
    )
    paired = tuple(dataclasses.replace(s, failover=pair) for s in subnets)
    return model.Inventory(subnets=paired, interfaces=interfaces)


def conf(
    pair: model.Failover | None,
    *,
    options: render_options.RenderOptions = OPTIONS,
    pool: tuple[str, str] = POOL,
) -> str:
    return render_kea.render(validate.check(inventory(pair, pool=pool)).inventory, options=options)


def dig(value: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def differences(a: Any, b: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths of every value that differs between two JSON documents."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [p for k in keys for p in differences(a.get(k), b.get(k), (*path, k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            p
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for p in differences(x, y, (*path, i))
        ]
    return [] if a == b else [path]


# ---- golden files ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_both_servers_of_a_pair_match_golden(golden: Golden, mode: str) -> None:
    short = mode.removeprefix("kea-")
    for role, name in (("primary", "dhcp-a"), ("secondary", "dhcp-b")):
        golden(f"ha-{short}-{name}.kea.json", conf(side(mode, role), options=GOLDEN_OPTIONS))


def test_agent_configs_match_golden(golden: Golden) -> None:
    for role, name in (("primary", "dhcp-a"), ("secondary", "dhcp-b")):
        pair = side("kea-hot-standby", role)
        golden(f"ha-agent-{name}.json", render_kea_agent.render(pair, options=OPTIONS))


def test_a_pair_without_a_mode_is_a_hot_standby_pair(golden: Golden) -> None:
    """dhcp_failover.mode NULL is Kea's default, hot-standby: both servers' configs and
    agent configs are byte for byte those of an explicit kea-hot-standby pair (the same
    goldens)."""
    for role, name in (("primary", "dhcp-a"), ("secondary", "dhcp-b")):
        pair, explicit = side(None, role), side("kea-hot-standby", role)
        text = conf(pair, options=GOLDEN_OPTIONS)
        assert text == conf(explicit, options=GOLDEN_OPTIONS)
        golden(f"ha-hot-standby-{name}.kea.json", text)
        agent = render_kea_agent.render(pair, options=OPTIONS)
        assert agent == render_kea_agent.render(explicit, options=OPTIONS)
        golden(f"ha-agent-{name}.json", agent)
        assert render_kea_ha.pair_of(inventory(pair).subnets) == pair
        assert render_kea_ha.hook_mode(pair) == "hot-standby"


# ---- the hook section ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "roles"),
    [("kea-hot-standby", ["primary", "standby"]), ("kea-load-balancing", ["primary", "secondary"])],
)
def test_the_hook_section_of_each_server(mode: str, roles: list[str]) -> None:
    for role, name in (("primary", "dhcp-a"), ("secondary", "dhcp-b")):
        config = json.loads(conf(side(mode, role, heartbeat_delay_ms=2000)))["Dhcp4"]
        libraries = [entry["library"] for entry in config["hooks-libraries"]]
        assert libraries == [f"{HOOKS}/libdhcp_lease_cmds.so", f"{HOOKS}/libdhcp_ha.so"]
        assert all(os.path.isabs(library) for library in libraries)
        (ha,) = config["hooks-libraries"][1]["parameters"]["high-availability"]
        assert ha["this-server-name"] == name
        assert ha["mode"] == mode.removeprefix("kea-")
        assert (ha["heartbeat-delay"], ha["max-response-delay"]) == (2000, 60000)
        assert (ha["max-ack-delay"], ha["max-unacked-clients"]) == (5000, 5)
        assert ha["peers"] == [
            {"name": "dhcp-a", "url": "http://10.0.0.2:8001/", "role": roles[0], "auto-failover": True},
            {"name": "dhcp-b", "url": "http://10.0.0.3:8002/", "role": roles[1], "auto-failover": True},
        ]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_subnet_ids_are_explicit_and_the_same_on_both_servers(mode: str) -> None:
    for role in ("primary", "secondary"):
        subnets = json.loads(conf(side(mode, role)))["Dhcp4"]["subnet4"]
        assert [(s["id"], s["subnet"]) for s in subnets] == [(7, "10.0.0.0/24"), (3, "10.0.1.0/24")]


def test_hot_standby_keeps_the_pool_whole() -> None:
    (lan, servers) = json.loads(conf(side("kea-hot-standby", "secondary")))["Dhcp4"]["subnet4"]
    assert lan["pools"] == [{"pool": "10.0.0.100 - 10.0.0.200"}]
    assert "pools" not in servers


@pytest.mark.parametrize(
    ("pool", "halves"),
    [
        (POOL, ("10.0.0.100 - 10.0.0.150", "10.0.0.151 - 10.0.0.200")),
        (("10.0.0.100", "10.0.0.101"), ("10.0.0.100 - 10.0.0.100", "10.0.0.101 - 10.0.0.101")),
        (("10.0.0.100", "10.0.0.103"), ("10.0.0.100 - 10.0.0.101", "10.0.0.102 - 10.0.0.103")),
    ],
)
def test_load_balancing_splits_each_pool_for_the_ha_classes(
    pool: tuple[str, str], halves: tuple[str, str]
) -> None:
    for role in ("primary", "secondary"):
        lan = json.loads(conf(side("kea-load-balancing", role), pool=pool))["Dhcp4"]["subnet4"][0]
        assert lan["pools"] == [
            {"pool": halves[0], "client-class": "HA_dhcp-a"},
            {"pool": halves[1], "client-class": "HA_dhcp-b"},
        ]


def test_a_pool_of_one_address_cannot_be_split() -> None:
    one = ("10.0.0.100", "10.0.0.100")
    with pytest.raises(errors.UnsafeValue, match="fewer than two addresses"):
        conf(side("kea-load-balancing", "primary"), pool=one)
    assert '"pool": "10.0.0.100 - 10.0.0.100"' in conf(side("kea-hot-standby", "primary"), pool=one)


def test_without_a_pair_there_are_no_hooks() -> None:
    config = json.loads(conf(None))["Dhcp4"]
    assert "hooks-libraries" not in config
    assert config["subnet4"][0]["pools"] == [{"pool": "10.0.0.100 - 10.0.0.200"}]


# ---- the pair as a whole: what differs between the two servers ------------------------


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from((*MODES, None)),
    ports=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
    hosts=st.tuples(st.integers(2, 254), st.integers(2, 254)).filter(lambda h: h[0] != h[1]),
    names=st.sampled_from([("dhcp-a", "dhcp-b"), ("b.example", "a.example"), ("s1", "S_2")]),
    pool=st.tuples(st.integers(100, 200), st.integers(1, 54)),
    timers=st.fixed_dictionaries(
        {
            "heartbeat_delay_ms": st.integers(1, 100_000),
            "max_response_delay_ms": st.integers(1, 1_000_000),
            "max_ack_delay_ms": st.integers(1, 100_000),
            "max_unacked_clients": st.integers(0, 1000),
        }
    ),
)
def test_the_two_configs_differ_only_in_this_server_name(
    mode: str | None,
    ports: tuple[int, int],
    hosts: tuple[int, int],
    names: tuple[str, str],
    pool: tuple[int, int],
    timers: dict[str, int],
) -> None:
    addresses = (
        ipaddress.IPv4Address(f"10.0.0.{hosts[0]}"),
        ipaddress.IPv4Address(f"10.0.0.{hosts[1]}"),
    )
    span = (f"10.0.0.{pool[0]}", f"10.0.0.{pool[0] + pool[1]}")
    kwargs: dict[str, Any] = {"names": names, "addresses": addresses, "ports": ports, **timers}
    primary = json.loads(conf(side(mode, "primary", **kwargs), pool=span))
    secondary = json.loads(conf(side(mode, "secondary", **kwargs), pool=span))
    assert differences(primary, secondary) == [THIS_SERVER]
    assert (dig(primary, THIS_SERVER), dig(secondary, THIS_SERVER)) == names
    peers = dig(primary, (*PER_SERVER, "peers"))
    assert [peer["name"] for peer in peers] == list(names)  # the primary first
    # each server's agent listens where its partner's config says it is
    for pair in (side(mode, "primary", **kwargs), side(mode, "secondary", **kwargs)):
        agent = json.loads(render_kea_agent.render(pair, options=OPTIONS))["Control-agent"]
        (me,) = [peer for peer in peers if peer["name"] == pair.server_name]
        assert me["url"] == f"http://{agent['http-host']}:{agent['http-port']}/"


# ---- refusals --------------------------------------------------------------------------


def test_an_isc_pair_is_refused_in_kea_format_and_a_kea_pair_in_isc_format() -> None:
    with pytest.raises(errors.UnsafeValue, match=r"mode 'isc-failover'.*--format isc"):
        conf(side("isc-failover", "primary"))
    for mode in MODES:
        checked = validate.check(inventory(side(mode, "secondary"))).inventory
        with pytest.raises(errors.UnsafeValue, match=rf"mode '{mode}'.*--format kea"):
            render_isc.render(checked, options=OPTIONS)
    with pytest.raises(errors.UnsafeValue, match="no kea-ctrl-agent"):
        render_kea_agent.render(side("isc-failover", "primary"), options=OPTIONS)


def test_subnets_that_disagree_on_their_pair_are_refused() -> None:
    pair = side("kea-hot-standby", "primary")
    subnets = inventory(pair).subnets
    mixed = (subnets[0], dataclasses.replace(subnets[1], failover=None))
    with pytest.raises(errors.UnsafeValue, match="different pairs"):
        render_kea_ha.pair_of(mixed)
    assert render_kea_ha.pair_of(subnets) == pair
    assert render_kea_ha.pair_of(()) is None


@pytest.mark.parametrize("directory", ["usr/lib/kea/hooks", "./hooks", "", "/x y"])
def test_the_hooks_directory_must_be_absolute(directory: str) -> None:
    with pytest.raises(errors.InvalidOptions, match="Kea hooks directory"):
        render_options.RenderOptions(kea_hooks_dir=directory)


def test_the_hooks_directory_follows_the_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: "aarch64-linux-gnu")
    assert render_options.default_kea_hooks_dir() == "/usr/lib/aarch64-linux-gnu/kea/hooks"
    for unknown in (None, "", "../../etc"):
        monkeypatch.setattr(sysconfig, "get_config_var", lambda name, value=unknown: value)
        assert render_options.default_kea_hooks_dir() == render_options.KEA_HOOKS_FALLBACK
    options = render_options.RenderOptions(kea_hooks_dir="/opt/kea/hooks/")
    libraries = json.loads(conf(side("kea-hot-standby", "primary"), options=options))["Dhcp4"]
    assert libraries["hooks-libraries"][0]["library"] == "/opt/kea/hooks/libdhcp_lease_cmds.so"


def test_the_agent_listens_on_its_side_and_forwards_to_the_control_socket() -> None:
    options = render_options.RenderOptions(control_socket="/run/kea/other.sock")
    for role, (address, port) in (
        ("primary", ("10.0.0.2", 8001)),
        ("secondary", ("10.0.0.3", 8002)),
    ):
        agent = json.loads(render_kea_agent.render(side("kea-hot-standby", role), options=options))
        section = agent["Control-agent"]
        assert (section["http-host"], section["http-port"]) == (address, port)
        assert section["control-sockets"] == {
            "dhcp4": {"socket-type": "unix", "socket-name": "/run/kea/other.sock"}
        }
        assert section["loggers"][0]["output_options"] == [{"output": "stdout"}]


# ---- the flags --------------------------------------------------------------------------


def load_options(argv: list[str], env: dict[str, str]) -> render_options.RenderOptions:
    args = cli.build_parser().parse_args(["--database-url", "postgresql://m@h/m", *argv])
    return cli.load_settings(args, env).apply.options


def test_the_hooks_directory_flag_and_environment() -> None:
    assert load_options(["--format", "kea"], {}).kea_hooks_dir == HOOKS
    env = {"KEA_HOOKS_DIR": "/opt/kea/lib/hooks"}
    assert load_options(["--format", "kea"], env).kea_hooks_dir == "/opt/kea/lib/hooks"
    flag = ["--format", "kea", "--kea-hooks-dir", "/srv/hooks"]
    assert load_options(flag, env).kea_hooks_dir == "/srv/hooks"  # the flag wins
    with pytest.raises(errors.InvalidOptions, match="'hooks' must be a plain absolute path"):
        load_options(["--format", "kea", "--kea-hooks-dir", "hooks"], {})
    with pytest.raises(ValueError, match="--kea-hooks-dir needs --format kea"):
        load_options(["--kea-hooks-dir", "/srv/hooks"], {})


def test_the_agent_mode_needs_a_server_and_kea() -> None:
    agent = ["--kea-ctrl-agent-config", "/etc/kea/kea-ctrl-agent.conf"]
    with pytest.raises(ValueError, match="needs --server NAME"):
        load_options(["--format", "kea", *agent], {})
    with pytest.raises(ValueError, match="--kea-ctrl-agent-config needs --format kea"):
        load_options([*agent, "--server", "dhcp-a"], {})
    assert load_options(["--format", "kea", *agent], {"DHCP_SERVER": "dhcp-a"}) == OPTIONS
    with pytest.raises(SystemExit):  # one mode at a time
        cli.build_parser().parse_args(["--once", *agent])


# ---- the real Kea ----------------------------------------------------------------------


@pytest.mark.dhcpd
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_kea_dhcp4_accepts_both_configs_of_each_pair(
    kea_check: Checker, mode: str, role: str
) -> None:
    assert kea_check(conf(side(mode, role))).skipped is False


@pytest.mark.dhcpd
def test_kea_dhcp4_checks_the_hook_libraries_exist(kea_check: Checker) -> None:
    missing = render_options.RenderOptions(kea_hooks_dir="/nonexistent/kea/hooks")
    with pytest.raises(errors.ConfigRejected, match=r"libdhcp_lease_cmds\.so"):
        kea_check(conf(side("kea-hot-standby", "primary"), options=missing))


@pytest.mark.dhcpd
@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_kea_ctrl_agent_accepts_each_servers_agent_config(role: str) -> None:
    binary = require_binary("kea-ctrl-agent")
    text = render_kea_agent.render(side("kea-hot-standby", role), options=OPTIONS)
    with tempfile.TemporaryDirectory(prefix="unit-agent-") as scratch:
        path = Path(scratch) / "kea-ctrl-agent.conf"
        path.write_text(text, encoding="utf-8")
        env = {**os.environ, "KEA_LOCKFILE_DIR": scratch, "KEA_PIDFILE_DIR": scratch}
        done = subprocess.run(
            [binary, "-t", str(path)], capture_output=True, text=True, env=env, timeout=30
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration check successful" in done.stdout + done.stderr


@contextlib.contextmanager
def running_kea(text: str, scratch: Path) -> Iterator[Path]:
    """kea-dhcp4 running ``text`` (no interfaces: it serves nothing) until the block
    ends; yields its control socket."""
    binary = require_binary("kea-dhcp4")
    path = scratch / "kea-dhcp4.conf"
    path.write_text(text, encoding="utf-8")
    env = {**os.environ, "KEA_LOCKFILE_DIR": str(scratch), "KEA_PIDFILE_DIR": str(scratch)}
    with (scratch / "kea.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-c", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    socket_path = str(scratch / "kea4.sock")

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError((scratch / "kea.log").read_text(errors="replace")[-2000:])
        try:
            return (
                kea_control.command(socket_path, {"command": "status-get"}, timeout=2)["result"]
                == 0
            )
        except kea_control.ControlError:
            return False

    try:
        waiting.wait_for(answers, deadline=20, what="kea-dhcp4's control socket")
        yield Path(socket_path)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.dhcpd
@pytest.mark.parametrize("mode", MODES)
def test_kea_dhcp4_runs_the_ha_hook_with_the_rendered_parameters(mode: str) -> None:
    """``kea-dhcp4 -t`` opens the hook libraries but never gives them their parameters:
    starting the server does. Peers on loopback; the partner is not running."""
    loopback = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address("127.0.0.1"))
    pair = side(mode, "primary", addresses=loopback, ports=(1, 2))
    with tempfile.TemporaryDirectory(prefix="unit-ha-") as name:
        scratch = Path(name)
        options = render_options.RenderOptions(
            lease_file=str(scratch / "leases.csv"), control_socket=str(scratch / "kea4.sock")
        )
        with running_kea(conf(pair, options=options), scratch) as socket_path:
            answer = kea_control.command(str(socket_path), {"command": "ha-heartbeat"}, timeout=5)
            status = kea_control.command(str(socket_path), {"command": "status-get"}, timeout=5)
    assert answer["result"] == 0, answer
    arguments = answer["arguments"]
    assert isinstance(arguments, dict)
    # waiting for its partner (max-response-delay, 60 s, before it takes over alone)
    assert arguments["state"] == "waiting", answer
    (ha,) = status["arguments"]["high-availability"]  # type: ignore[index]
    assert ha["ha-mode"] == mode.removeprefix("kea-")
    remote = "standby" if mode == "kea-hot-standby" else "secondary"
    assert (ha["ha-servers"]["local"]["role"], ha["ha-servers"]["remote"]["role"]) == (
        "primary",
        remote,
    )
