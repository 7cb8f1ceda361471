"""End to end over OMAPI: host changes written with SQL reach a running dhcpd without
restarting it, and a dhcpd killed and started again serves the database's answer.

PostgreSQL -> triggers -> outbox -> cdc-relay -> ActiveMQ -> dhcp-generator --omapi ->
the running dhcpd (OMAPI) and dhcpd.conf -> a busybox udhcpc in another namespace.

dhcpd starts only through the generator's reload command, which counts its starts
(reload_dhcpd.sh's stamp file). The tests' own restarts are what a crash and a
supervisor give: SIGKILL, then a plain start with the same config and lease file,
through reload_dhcpd.sh without the stamp file, so they are not counted. The generator
reaches OMAPI over the harness's control link (``Link.control_ip``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import services
from hypothesis import Phase, given, note, settings
from hypothesis import strategies as st

from generator import omapi, quote
from tests.conftest import require
from tests.e2e import configs, netns, pipeline
from tests.e2e.conftest import new_mac
from tests.integration import generator_support

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd, pytest.mark.pg, pytest.mark.broker]

KEY_NAME = "mdb-e2e"
SUBNET_NAME = "e2e-omapi"
LEASE_TIME = 600  # seconds, the subnet's lease time in the database
START_DEADLINE = 60.0  # seconds for the generator's first render and dhcpd's first start
APPLY_DEADLINE = 20.0  # seconds from a commit until the file in place shows it
SERVE_DEADLINE = 20.0  # seconds until the client gets the expected answer
OMAPI_DEADLINE = 10.0  # seconds for a (re)started dhcpd to answer OMAPI
DIED_DEADLINE = 5.0  # seconds for a SIGKILLed dhcpd to be gone
WINDOW = 0.1  # seconds, the generator's coalescing window: one change at a time here
ONCE_TIMEOUT = 60.0  # seconds for a dhcp-generator --once run

_FILE_HOST = re.compile(
    r"^host (?P<name>\S+) \{\n\s*hardware ethernet (?P<mac>[0-9a-f:]{17});\n"
    r"\s*fixed-address (?P<ip>[0-9.]+);\n",
    re.MULTILINE,
)
_RESERVATIONS = """
    SELECT i.mac::text, h.hostname, host(i.ip)
    FROM interface i JOIN host h ON h.id = i.host_id
    WHERE i.ip IS NOT NULL AND h.enabled
"""

RESTARTS = 'dhcp_generator_applies_total{kind="restart"}'
Hosts = dict[str, tuple[str, str]]  # MAC -> (host declaration name, address)


class UnexpectedRestart(AssertionError):
    """dhcpd was started more often than the changes call for."""


@dataclass
class Lab:
    """The whole pipeline around one dhcpd with OMAPI, and the test's view of it."""

    db_url: str
    db: psycopg.Connection[tuple[object, ...]]
    net: netns.Link
    workdir: Path
    client: netns.Client
    server: netns.IscServer
    stamp: Path
    key: omapi.Key
    key_file: Path
    omapi_port: int
    metrics_port: int
    omapi: omapi.Client
    daemons: list[pipeline.Daemon] = field(default_factory=list)

    def ip(self, n: int) -> str:
        return str(self.net.host(n))

    # --- what the database, the file and dhcpd hold ---------------------------------

    def reservations(self) -> Hosts:
        """Every reservation the database gives (one subnet: all of them are ours)."""
        rows = self.db.execute(_RESERVATIONS).fetchall()
        return {
            str(mac): (quote.host_declaration_name(str(hostname), str(mac)), str(ip))
            for mac, hostname, ip in rows
        }

    def file_hosts(self) -> Hosts:
        try:
            text = self.server.conf.read_text()
        except FileNotFoundError:
            return {}
        return {m["mac"]: (m["name"], m["ip"]) for m in _FILE_HOST.finditer(text)}

    def lookup(self, mac: str) -> tuple[str, str] | None:
        """dhcpd's host for ``mac`` over OMAPI (reconnecting after a restart)."""
        found: list[omapi.Host | None] = []

        def attempt() -> bool:
            try:
                found.append(self.omapi.lookup_by_mac(mac))
            except omapi.Unreachable:
                return False
            return True

        self.wait(attempt, OMAPI_DEADLINE, f"an OMAPI lookup of {mac}")
        host = found[-1]
        return None if host is None else (host.name, host.ip)

    def check_omapi(self, macs: list[str], what: str) -> None:
        """dhcpd, asked over OMAPI, holds the database's reservation of each MAC."""
        wanted = self.reservations()
        got = {mac: self.lookup(mac) for mac in macs}
        expected = {mac: wanted.get(mac) for mac in macs}
        if got != expected:
            self.fail(f"{what}: dhcpd over OMAPI has {got}, the database says {expected}")

    # --- the generator and dhcpd ----------------------------------------------------

    def starts(self) -> int:
        """dhcpd starts through the generator's reload command that succeeded."""
        if not self.stamp.exists():
            return 0
        return sum(line.split()[-1] == "0" for line in self.stamp.read_text().splitlines())

    def assert_starts(self, expected: int, what: str) -> None:
        """Raise ``UnexpectedRestart`` (with the logs) unless the generator's reload
        command started dhcpd ``expected`` times."""
        if self.starts() != expected:
            message = f"{what}: dhcpd was started {self.starts()} times, expected {expected}"
            raise UnexpectedRestart(f"{message}\n{self.logs()}")

    def applies(self, kind: str) -> float:
        return self.metric(f'dhcp_generator_applies_total{{kind="{kind}"}}')

    def metric(self, name: str) -> float:
        value = generator_support.metric(self.metrics_port, name)
        if value is None:
            self.fail(f"the generator serves no metric {name}")
        return value

    def applied_passes(self) -> float:
        """Passes that put changed hosts in place, over OMAPI or by a restart."""
        return self.applies("omapi") + self.applies("restart")

    def wait_applied(self, what: str, since: float | None) -> Hosts:
        """Wait until the file in place holds exactly the database's reservations and
        the pass that put it there is over: counted (after a restart: once dhcpd runs
        it) and its messages acknowledged (after the hosts were mended over OMAPI).
        ``since``: ``applied_passes()`` before the change, None for no change."""
        started = time.monotonic()

        def applied() -> Hosts | None:
            for daemon in self.daemons:
                if not daemon.alive():
                    self.fail(f"{what}: {daemon.name} exited")
            wanted = self.reservations()
            if self.file_hosts() != wanted:
                return None
            if since is not None and self.applied_passes() <= since:
                return None
            if self.metric("dhcp_generator_pending_messages") != 0:
                return None
            return wanted or {"": ("", "")}

        self.wait(applied, APPLY_DEADLINE, f"{what}: the file to show it")
        print(f"{what}: applied after {time.monotonic() - started:.2f} s")
        return self.reservations()

    def restart_plainly(self) -> None:
        """SIGKILL dhcpd, start it again with the same files, not through the generator."""
        pid = self.server.pid()
        if pid is None or not self.server.running():
            self.fail("dhcpd is not running before a restart")
        os.kill(pid, signal.SIGKILL)
        self.wait(lambda: not netns.alive(pid), DIED_DEADLINE, "dhcpd to die")
        plain = [str(netns.RELOAD_DHCPD), self.net.server_ns, self.net.server_if]
        plain += [str(self.server.conf), str(self.server.leases), str(self.server.pid_file)]
        done = subprocess.run(plain, capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            self.fail(f"dhcpd did not start again: {done.stderr.strip()}")

    def serves(self, mac: str, predicate: Callable[[str | None], bool], what: str) -> str | None:
        started = time.monotonic()
        try:
            address = self.client.wait_for(predicate, SERVE_DEADLINE, mac)
        except netns.HarnessError as exc:
            self.fail(f"{what}: {exc}")
        print(f"{what}: {address} after {time.monotonic() - started:.2f} s")
        return address

    def in_pool(self, address: str | None) -> bool:
        return configs.in_pool(self.net, address)

    def wait(self, condition: Callable[[], object], deadline: float, what: str) -> object:
        try:
            return netns.wait_until(condition, deadline, what)
        except netns.HarnessError as exc:
            self.fail(str(exc))

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n{self.logs()}", pytrace=False)

    def logs(self) -> str:
        logs = [daemon.tail() for daemon in self.daemons]
        for path in (self.server.log, self.server.conf, self.server.leases):
            if path.exists():
                logs.append(f"--- {path}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(logs)

    # --- changes, with SQL only -----------------------------------------------------

    def change(self, what: str, write: Callable[[], object]) -> None:
        """Make a change in the database with ``write`` and wait until it is applied."""
        since = self.applied_passes()
        write()
        self.wait_applied(what, since)

    def add_host(self, hostname: str, mac: str, ip: str) -> None:
        self.db.execute(
            "WITH h AS (INSERT INTO host (hostname) VALUES (%s) RETURNING id)"
            " INSERT INTO interface (host_id, mac, ip) SELECT id, %s, %s FROM h",
            (hostname, mac, ip),
        )

    def set_ip(self, mac: str, ip: str) -> None:
        self.db.execute("UPDATE interface SET ip = %s WHERE mac = %s", (ip, mac))

    def delete_host(self, hostname: str) -> None:
        self.db.execute("DELETE FROM host WHERE hostname = %s", (hostname,))


@pytest.fixture
def seed() -> dict[str, tuple[str, int]]:
    """A host in the database before the generator starts: hostname -> (MAC, host number)."""
    return {"omapi-seed": (new_mac(), 10)}


@pytest.fixture
def lab(
    need_dhcpd: None,
    db_url: str,
    db: psycopg.Connection[tuple[object, ...]],
    broker: services.ActiveMQBroker,
    unique_destination: str,
    net: netns.Link,
    workdir: Path,
    client: netns.Client,
    seed: dict[str, tuple[str, int]],
) -> Iterator[Lab]:
    require(pipeline.have_commands(), "the cdc-relay and dhcp-generator commands")
    start, end = configs.pool_range(net)
    db.execute(
        "INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (SUBNET_NAME, str(net.network), str(net.server_ip), start, end, LEASE_TIME),
    )
    key, key_file = pipeline.omapi_key_file(workdir, KEY_NAME)
    stamp = workdir / "dhcpd.starts"
    # The OMAPI port is one no process listens on here, in the test's namespace: a
    # --once run pointed at 127.0.0.1 with it renders the same file and reaches no dhcpd.
    omapi_port, metrics_port = services.free_port(), services.free_port()
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            netns.isc_dhcpd(net, workdir / "dhcpd.conf", workdir, stamp_file=stamp, start=False)
        )
        hosts = omapi.Client(host=str(net.control_ip), port=omapi_port, key=key)
        stack.callback(hosts.close)
        lab = Lab(
            db_url=db_url, db=db, net=net, workdir=workdir, client=client, server=server,
            stamp=stamp, key=key, key_file=key_file, omapi_port=omapi_port,
            metrics_port=metrics_port, omapi=hosts,
        )  # fmt: skip
        for hostname, (mac, n) in seed.items():
            lab.add_host(hostname, mac, lab.ip(n))
        relay = stack.enter_context(
            pipeline.relay(
                database_url=db_url,
                stomp_url=broker.url,
                destination=unique_destination,
                log=workdir / "relay.log",
            )
        )
        generator = stack.enter_context(
            pipeline.generator(
                database_url=db_url,
                stomp_url=broker.url,
                destination=unique_destination,
                consumer=f"e2e{uuid.uuid4().hex[:8]}",
                args=[
                    *generator_args(lab, server.conf),
                    *("--metrics-port", str(metrics_port), "--window", str(WINDOW)),
                ],
                log=workdir / "generator.log",
            )
        )
        lab.daemons += [relay, generator]
        started = time.monotonic()
        pending = "dhcp_generator_pending_messages"
        lab.wait(
            lambda: (
                lab.file_hosts() == lab.reservations()
                and lab.starts() == 1
                and generator_support.metric(metrics_port, RESTARTS) == 1
                and generator_support.metric(metrics_port, pending) == 0
            ),
            START_DEADLINE,
            "the generator's first render and dhcpd's start",
        )
        lab.lookup(new_mac())  # OMAPI answers
        print(f"first render and dhcpd start: {time.monotonic() - started:.2f} s")
        yield lab


def generator_args(lab: Lab, output: Path, *, omapi_host: str | None = None) -> list[str]:
    reload = " ".join(lab.server.reload_command)  # the one with the stamp file: counted
    target = f"{omapi_host or lab.net.control_ip}:{lab.omapi_port}"
    return [
        "--format", "isc",
        "--output", str(output),
        "--omapi", target,
        "--omapi-key-file", str(lab.key_file),
        *([] if omapi_host else ["--reload-command", reload]),
    ]  # fmt: skip


def render_once(lab: Lab) -> str:
    """What ``dhcp-generator --once`` renders now, into a file of its own (no reload;
    its OMAPI target is a port nobody listens on: it changes nothing in dhcpd)."""
    other = lab.workdir / "once" / "dhcpd.conf"
    other.parent.mkdir(exist_ok=True)
    other.unlink(missing_ok=True)
    done = subprocess.run(
        [
            pipeline.command("dhcp-generator"),
            "--once",
            *generator_args(lab, other, omapi_host="127.0.0.1"),
        ],
        capture_output=True,
        text=True,
        timeout=ONCE_TIMEOUT,
        env={**os.environ, "DATABASE_URL": lab.db_url},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return other.read_text()


# --- 1 and 2: one client followed through insert, move, delete, re-add; then a crash --


def test_host_changes_reach_dhcpd_over_omapi_without_a_restart(
    lab: Lab, seed: dict[str, tuple[str, int]]
) -> None:
    ((seed_mac, _),) = seed.values()
    mac, hostname = new_mac(), "omapi-client"
    restarts, omapi_applies = lab.applies("restart"), lab.applies("omapi")

    def psql(sql: str) -> None:
        pipeline.psql(lab.db_url, sql)

    assert (lab.starts(), restarts) == (1, 1)
    lab.serves(mac, lab.in_pool, "unknown MAC, a pool address")

    add = (
        "WITH h AS (INSERT INTO host (hostname) VALUES ('{name}') RETURNING id)"
        " INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{ip}' FROM h"
    )
    lab.change("insert", lambda: psql(add.format(name=hostname, mac=mac, ip=lab.ip(20))))
    lab.serves(mac, lambda a: a == lab.ip(20), "inserted")

    move = "UPDATE interface SET ip = '{ip}' WHERE mac = '{mac}'"
    lab.change("address change", lambda: psql(move.format(ip=lab.ip(21), mac=mac)))
    lab.serves(mac, lambda a: a == lab.ip(21), "moved")

    lab.change("delete", lambda: psql(f"DELETE FROM host WHERE hostname = '{hostname}'"))
    address = lab.serves(mac, lab.in_pool, "deleted, a pool address")
    assert address not in (lab.ip(20), lab.ip(21))

    lab.change("re-add", lambda: psql(add.format(name=hostname, mac=mac, ip=lab.ip(22))))
    lab.serves(mac, lambda a: a == lab.ip(22), "re-added")

    # a host of the file dhcpd started with, moved in place
    lab.change("seed moved", lambda: psql(move.format(ip=lab.ip(11), mac=seed_mac)))
    lab.serves(seed_mac, lambda a: a == lab.ip(11), "seed moved")

    lab.assert_starts(1, "host changes")
    assert lab.applies("restart") == restarts
    assert lab.applies("omapi") >= omapi_applies + 5
    assert lab.metric("dhcp_generator_omapi_fallbacks_total") == 0
    assert lab.metric("dhcp_generator_omapi_mismatches_total") == 0
    lab.check_omapi([mac, seed_mac], "after the changes")
    assert lab.server.conf.read_text() == render_once(lab)

    # 2: dhcpd crashes and a supervisor starts it again: the lease file's OMAPI records
    # replayed over the config file give the database's answer, twice in a row (the
    # first start rewrites the lease file).
    for attempt in ("first", "second"):
        lab.restart_plainly()
        lab.check_omapi([mac, seed_mac], f"after the {attempt} plain restart")
        lab.serves(mac, lambda a: a == lab.ip(22), f"{attempt} plain restart, the client")
        lab.serves(seed_mac, lambda a: a == lab.ip(11), f"{attempt} plain restart, the seed")
    lab.assert_starts(1, "plain restarts")


# --- 3: random changes and crashes ---------------------------------------------------

SLOTS = 3  # MACs per example
ADDRESSES = tuple(range(20, 26))  # host numbers the reservations draw from
STEPS = (4, 8)  # steps per example, at least and at most
CHECKED_BY_CLIENT = 2  # MACs asked for by the real client at the end of an example


@dataclass
class Slot:
    """One MAC of an example and what the database holds for it."""

    mac: str
    names: tuple[str, str]  # host names it is (re-)added under
    hostname: str | None = None  # in the database now, with ``ip``
    ip: int | None = None


def test_random_host_changes_and_crashes_converge(lab: Lab) -> None:
    seed_macs = list(lab.reservations())
    crashes: list[int] = []

    @settings(
        max_examples=5,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        report_multiple_bugs=False,
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        tag = uuid.uuid4().hex[:6]
        slots = [Slot(mac=new_mac(), names=(f"hy{i}-{tag}", f"hy{i}b-{tag}")) for i in range(SLOTS)]
        macs = [slot.mac for slot in slots] + seed_macs
        # an example starts from an inventory without the hosts of those before it
        since = lab.applied_passes()
        cleaned = lab.db.execute("DELETE FROM host WHERE hostname LIKE 'hy%'").rowcount
        lab.wait_applied("clean-up", since if cleaned else None)
        for step in range(data.draw(st.integers(*STEPS), label="steps")):
            taken = {slot.ip for slot in slots}
            free = [n for n in ADDRESSES if n not in taken]
            choices: list[tuple[str, int]] = [("crash", -1)]
            for i, slot in enumerate(slots):
                if slot.hostname is None:
                    choices.append(("add", i))
                else:
                    choices += [("move", i), ("delete", i)]
            op, i = data.draw(st.sampled_from(choices), label=f"step {step}")
            if op == "crash":
                lab.restart_plainly()
                crashes.append(step)
                lab.check_omapi(macs, f"step {step}: after a plain restart")
                continue
            slot = slots[i]
            since = lab.applied_passes()
            if op == "add":
                slot.hostname = data.draw(st.sampled_from(slot.names), label="name")
                slot.ip = data.draw(st.sampled_from(free), label="address")
                lab.add_host(slot.hostname, slot.mac, lab.ip(slot.ip))
            elif op == "move":
                slot.ip = data.draw(st.sampled_from(free), label="address")
                lab.set_ip(slot.mac, lab.ip(slot.ip))
            else:
                assert slot.hostname is not None
                lab.delete_host(slot.hostname)
                slot.hostname = slot.ip = None
            note(f"step {step}: {op} {slot}")
            lab.wait_applied(f"step {step}: {op}", since)
            lab.check_omapi(macs, f"step {step}: {op}")
        lab.check_omapi(macs, "the end of the example")
        held = [slot for slot in slots if slot.ip is not None][:CHECKED_BY_CLIENT]
        for slot in held:
            assert slot.ip is not None
            lab.serves(slot.mac, lab.ip(slot.ip).__eq__, f"{slot.mac}: the client")
        if not held:
            lab.serves(slots[0].mac, lab.in_pool, f"{slots[0].mac}: the client, a pool address")

    run()
    print(f"plain restarts at steps {crashes}; dhcpd starts by the generator: {lab.starts()}")
    assert lab.metric("dhcp_generator_omapi_mismatches_total") == 0
    assert lab.server.conf.read_text() == render_once(lab)
    # a plain restart is no reason for the generator to restart dhcpd again
    assert lab.metric("dhcp_generator_omapi_fallbacks_total") == 0
    lab.assert_starts(1, "host changes and plain restarts")


# --- 4: a subnet change is a restart -------------------------------------------------


def test_a_subnet_change_restarts_dhcpd_once(lab: Lab, seed: dict[str, tuple[str, int]]) -> None:
    ((seed_mac, n),) = seed.values()
    restarts = lab.applies("restart")
    lab.change("lease time", lambda: change_lease_time(lab, 900))
    assert "default-lease-time 900;" in lab.server.conf.read_text()
    lab.assert_starts(2, "a subnet change")
    assert lab.applies("restart") == restarts + 1
    lab.serves(seed_mac, lambda a: a == lab.ip(n), "after the subnet change, the seed")
    lab.check_omapi([seed_mac], "after the subnet change")


def change_lease_time(lab: Lab, seconds: int) -> None:
    lab.db.execute("UPDATE subnet SET lease_time = %s WHERE name = %s", (seconds, SUBNET_NAME))


# --- after any restart, the next host change still goes over OMAPI ---------------------


@pytest.mark.parametrize("restart", ["plain", "subnet"])
def test_a_host_change_after_a_dhcpd_restart_goes_over_omapi(lab: Lab, restart: str) -> None:
    if restart == "plain":  # a crash and a supervisor, unknown to the generator
        lab.restart_plainly()
        expected = 1
    else:  # the generator's own restart, for a subnet change (no host changed with it)
        lab.change("lease time", lambda: change_lease_time(lab, 900))
        expected = 2
    lab.assert_starts(expected, f"{restart} restart")
    mac = new_mac()
    lab.change("insert", lambda: lab.add_host("after-restart", mac, lab.ip(30)))
    lab.serves(mac, lambda a: a == lab.ip(30), "inserted after the restart")
    lab.check_omapi([mac], "inserted after the restart")
    lab.assert_starts(expected, "a host change after the restart")
    assert lab.metric("dhcp_generator_omapi_fallbacks_total") == 0
