"""End to end: an ISC dhcpd failover pair from the database survives losing its primary.

Two dhcpd, dhcp-a (primary) and dhcp-b (secondary), in two network namespaces on one
bridged segment (``tests/e2e/segment.py``) with a busybox udhcpc client, serve one
subnet as the ``dhcp_failover`` row says. Each server has its own ``dhcp-generator
--server NAME`` with its own consumer queue, its own OMAPI key and control link, writing
its own dhcpd.conf and starting its own dhcpd (reload_dhcpd.sh in its namespace).
Everything is driven by SQL:

a. both peers reach ``normal``: each dhcpd says so live over OMAPI (the
   ``failover-state`` object's local-state and partner-state) and in the last
   ``failover peer ... state`` record of its lease file;
b. the client gets its reservation;
c. the primary machine is lost (its generator and its dhcpd SIGKILLed): a fresh
   DISCOVER still gets the reservation, and a MAC without one a pool address, from the
   survivor, which is then in communications-interrupted;
d. a reservation committed while the primary is down reaches the survivor and is served;
e. the primary's dhcpd and generator start again (a reboot: dhcpd from the file it had,
   then the generator, which catches up from its queue); the pair is ``normal`` again;
   with the secondary's dhcpd then SIGKILLed, only the primary is left to answer, and it
   serves both reservations.

Two more tests: the primary lost silently (its segment link cut before the SIGKILL, as
when a machine loses power), which the survivor learns only after max-response-delay;
and the primary replaced by a machine without a lease file, which recovers for one MCLT
while the secondary serves alone in partner-down.

The pair's timers are a test profile set in the row: MCLT 10 s (dhcpd caps a lease it
gives while it cannot reach its partner at the MCLT, and a peer that must recover waits
one MCLT in recover-wait: 10 s keeps either inside the test) and max-response-delay 5 s
(how long a peer that hears nothing from its partner waits before calling it
unreachable; a SIGKILLed dhcpd's connection is closed by the kernel at once, so the
survivor knows at once).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psycopg
import pypureomapi
import pytest
import services

from generator import omapi
from tests.conftest import require
from tests.e2e import configs, netns, pipeline, segment
from tests.e2e.conftest import new_mac
from tests.integration import generator_support

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd, pytest.mark.pg, pytest.mark.broker]

PAIR = "dhcp-ab"
SUBNET = "e2e-failover"
LEASE_TIME = 600  # seconds, the subnet's lease time
MCLT = 10  # seconds (see the module docstring)
MAX_RESPONSE_DELAY = 5  # seconds
OMAPI_PORT = 7911  # in each server's own namespace
KEY_NAME = "mdb-e2e"
WINDOW = 0.1  # seconds, the generators' coalescing window

START_DEADLINE = 60.0  # seconds for both generators' first render and dhcpd start
NORMAL_DEADLINE = 4 * MCLT  # seconds for both peers to reach normal
APPLY_DEADLINE = 20.0  # seconds from a commit until a generator has applied it
SERVE_DEADLINE = 20.0  # seconds until the client gets the expected answer
DIED_DEADLINE = 5.0  # seconds for a SIGKILLed dhcpd to be gone
OMAPI_TIMEOUT = 2.0  # seconds for one OMAPI connection and query

PENDING = "dhcp_generator_pending_messages"
# dhcpd's failover states as OMAPI gives them (the numbering of the failover protocol,
# and dhcpd's own recover-wait)
STATES = {
    0: "unknown-state",
    1: "startup",
    2: "normal",
    3: "communications-interrupted",
    4: "partner-down",
    5: "potential-conflict",
    6: "recover",
    7: "paused",
    8: "shutdown",
    9: "recover-done",
    10: "resolution-interrupted",
    11: "conflict-done",
    254: "recover-wait",
}
_LEASE_FILE_STATE = re.compile(
    r'failover peer "[^"]+" state \{\s*my state (\S+) at [^;]*;\s*partner state (\S+) at'
)


@dataclass
class Side:
    """One server of the pair: its namespace, its files, its generator."""

    name: str  # the dhcp_server row
    view: netns.Link  # its place on the segment
    workdir: Path
    server: netns.IscServer
    key_secret: str
    key_file: Path
    consumer: str
    metrics_port: int = 0
    generator: pipeline.Daemon | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def address(self) -> str:
        return str(self.view.server_ip)

    def conf_text(self) -> str:
        try:
            return self.server.conf.read_text()
        except FileNotFoundError:
            return ""

    def holds(self, mac: str, ip: str) -> bool:
        """The file in place has a host for ``mac`` at ``ip``."""
        pattern = rf"hardware ethernet {re.escape(mac)};\n\s*fixed-address {re.escape(ip)};"
        return re.search(pattern, self.conf_text()) is not None

    def applies(self, kind: str) -> float | None:
        """The running generator's passes of ``kind`` (restart, omapi, unchanged)."""
        name = f'dhcp_generator_applies_total{{kind="{kind}"}}'
        return generator_support.metric(self.metrics_port, name)

    def pending(self) -> float | None:
        return generator_support.metric(self.metrics_port, PENDING)

    def failover_state(self) -> tuple[str, str] | None:
        """(local-state, partner-state) of the pair, asked of this dhcpd over OMAPI."""
        key = omapi.Key(name=KEY_NAME, algorithm="hmac-md5", secret=self.key_secret)
        host = str(self.view.control_ip)
        client = omapi.Client(host=host, port=OMAPI_PORT, key=key, timeout=OMAPI_TIMEOUT)
        message = pypureomapi.OmapiMessage.open(b"failover-state")
        message.update_object({b"name": PAIR.encode()})
        try:
            # the generator's client speaks host objects only; its connection (which it
            # closes on every failure) carries this open as well
            answer = client._request(message)
        except omapi.OmapiError:
            return None
        finally:
            client.close()
        if answer.opcode != pypureomapi.OMAPI_OP_UPDATE:
            return None
        values = dict(answer.obj)

        def state(key: bytes) -> str:
            (number,) = struct.unpack("!I", values[key])
            return STATES.get(number, str(number))

        return state(b"local-state"), state(b"partner-state")

    def lease_file_state(self) -> tuple[str, str] | None:
        """The last (my state, partner state) dhcpd recorded in its lease file."""
        try:
            found = _LEASE_FILE_STATE.findall(self.server.leases.read_text(errors="replace"))
        except FileNotFoundError:
            return None
        return found[-1] if found else None

    def kill_dhcpd(self) -> None:
        pid = self.server.pid()
        if pid is None or not self.server.running():
            raise AssertionError(f"{self.name}'s dhcpd is not running")
        os.kill(pid, signal.SIGKILL)
        netns.wait_until(lambda: not netns.alive(pid), DIED_DEADLINE, f"{self.name}'s dhcpd to die")

    def stop_dhcpd(self) -> None:
        """SIGKILL dhcpd if it runs (it ends at once on SIGTERM too) and forget its pid."""
        if self.server.running():
            self.kill_dhcpd()
        self.server.pid_file.unlink(missing_ok=True)

    def wipe(self) -> None:
        """A replaced machine: no config, no lease file, no generator state (logs kept)."""
        for path in self.workdir.iterdir():
            if path.name.startswith(("dhcpd.", ".dhcpd.")) and path.suffix != ".log":
                path.unlink()

    def start_dhcpd_plainly(self) -> None:
        """Start dhcpd on the file in place, as the machine's init system would."""
        plain = [str(netns.RELOAD_DHCPD), self.view.server_ns, self.view.server_if]
        plain += [str(self.server.conf), str(self.server.leases), str(self.server.pid_file)]
        done = subprocess.run(plain, capture_output=True, text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise AssertionError(f"{self.name}'s dhcpd did not start: {done.stderr.strip()}")


@dataclass
class Pair:
    """The pipeline around both servers, and the test's view of it."""

    db_url: str
    db: psycopg.Connection[tuple[object, ...]]
    broker_url: str
    destination: str
    seg: segment.Segment
    client: netns.Client
    a: Side
    b: Side
    relay: pipeline.Daemon | None = None

    def ip(self, n: int) -> str:
        return str(self.seg.host(n))

    def start_generator(self, side: Side) -> None:
        side.metrics_port = services.free_port()
        args = [
            *pipeline.isc_args(side.server),
            "--server", side.name,
            "--consumer", side.consumer,
            "--omapi", f"{side.view.control_ip}:{OMAPI_PORT}",
            "--omapi-key-file", str(side.key_file),
            "--metrics-port", str(side.metrics_port),
            "--window", str(WINDOW),
        ]  # fmt: skip
        side.generator = side.stack.enter_context(
            pipeline.generator(
                database_url=self.db_url,
                stomp_url=self.broker_url,
                destination=self.destination,
                consumer=side.consumer,
                args=args,
                log=side.workdir / "generator.log",
            )
        )

    def kill_generator(self, side: Side) -> None:
        assert side.generator is not None
        side.generator.process.kill()
        side.generator.process.wait()
        side.stack.close()
        side.generator = None

    def add_host(self, hostname: str, mac: str, ip: str) -> None:
        pipeline.psql(
            self.db_url,
            f"WITH h AS (INSERT INTO host (hostname) VALUES ('{hostname}') RETURNING id)"
            f" INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{ip}' FROM h",
        )

    # --- waiting, with every log on a failure ---------------------------------------

    def wait(self, condition: Callable[[], object], deadline: float, what: str) -> float:
        """Wait for ``condition``; the seconds it took."""
        started = time.monotonic()

        def check() -> object:
            for daemon in self.daemons():
                if not daemon.alive():
                    self.fail(f"{what}: {daemon.name} exited")
            return condition()

        try:
            netns.wait_until(check, deadline, what)
        except netns.HarnessError as exc:
            self.fail(str(exc))
        took = time.monotonic() - started
        print(f"{what}: {took:.2f} s")
        return took

    def wait_states(self, expected: dict[str, tuple[str, str]], what: str) -> float:
        """Wait until each named dhcpd says it is in the (local, partner) states given,
        over OMAPI and in the last record of its lease file alike."""
        sides = {side.name: side for side in (self.a, self.b)}

        def reached() -> bool:
            return all(
                sides[name].failover_state() == states == sides[name].lease_file_state()
                for name, states in expected.items()
            )

        return self.wait(reached, NORMAL_DEADLINE, what)

    def wait_applied(self, side: Side, mac: str, ip: str, what: str) -> float:
        """``side``'s generator wrote the host and has nothing left to do."""
        return self.wait(lambda: side.holds(mac, ip) and side.pending() == 0, APPLY_DEADLINE, what)

    def serves(self, mac: str, predicate: Callable[[str | None], bool], what: str) -> str | None:
        started = time.monotonic()
        try:
            address = self.client.wait_for(predicate, SERVE_DEADLINE, mac)
        except netns.HarnessError as exc:
            self.fail(f"{what}: {exc}")
        print(f"{what}: {address} after {time.monotonic() - started:.2f} s")
        return address

    def daemons(self) -> list[pipeline.Daemon]:
        found = [self.relay, self.a.generator, self.b.generator]
        return [daemon for daemon in found if daemon is not None]

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n{self.logs()}", pytrace=False)

    def logs(self) -> str:
        logs = [daemon.tail() for daemon in self.daemons()]
        for side in (self.a, self.b):
            logs.append(f"--- {side.name}: OMAPI {side.failover_state()}")
            logs.append(f"    lease file {side.lease_file_state()}")
            for path in (side.server.log, side.server.conf, side.workdir / "generator.log"):
                if path.exists():
                    logs.append(f"--- {path}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(logs)


@pytest.fixture
def seg() -> Iterator[segment.Segment]:
    require(*netns.available())
    with segment.segment(servers=2) as shared:
        yield shared


def pair_sql(seg: segment.Segment, a: Side, b: Side) -> str:
    """The subnet, both servers serving it and the pair with the test profile."""
    start, end = configs.pool_range(seg.servers[0])
    gateway = seg.host(254)
    return f"""
        INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time)
            VALUES ('{SUBNET}', '{seg.network}', '{gateway}', '{start}', '{end}', {LEASE_TIME});
        INSERT INTO dhcp_server (name) VALUES ('{a.name}'), ('{b.name}');
        INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id)
            SELECT s.id, n.id FROM dhcp_server s, subnet n WHERE n.name = '{SUBNET}';
        INSERT INTO dhcp_failover (name, mode, primary_server_id, secondary_server_id,
                                   primary_address, secondary_address,
                                   mclt, max_response_delay)
            SELECT '{PAIR}', 'isc-failover', p.id, s.id, '{a.address}', '{b.address}',
                   {MCLT}, {MAX_RESPONSE_DELAY}
            FROM dhcp_server p, dhcp_server s WHERE p.name = '{a.name}' AND s.name = '{b.name}';
    """


@pytest.fixture
def pair(
    need_dhcpd: None,
    db_url: str,
    db: psycopg.Connection[tuple[object, ...]],
    broker: services.ActiveMQBroker,
    unique_destination: str,
    seg: segment.Segment,
    workdir: Path,
) -> Iterator[Pair]:
    require(pipeline.have_commands(), "the cdc-relay and dhcp-generator commands")
    with contextlib.ExitStack() as stack:
        sides = []
        for label, view in zip("ab", seg.servers, strict=True):
            side_dir = workdir / label
            side_dir.mkdir()
            key, key_file = pipeline.omapi_key_file(side_dir, KEY_NAME)
            server = stack.enter_context(
                netns.isc_dhcpd(view, side_dir / "dhcpd.conf", side_dir, start=False)
            )
            sides.append(
                Side(
                    name=f"dhcp-{label}",
                    view=view,
                    workdir=side_dir,
                    server=server,
                    key_secret=key.secret,
                    key_file=key_file,
                    consumer=f"fo{label}{uuid.uuid4().hex[:8]}",
                )
            )
        a, b = sides
        for side in sides:
            # after the generators, before netns.isc_dhcpd's own stop, which would wait
            # for PID 1 to reap the dead dhcpd (seconds here)
            stack.callback(side.stop_dhcpd)
            stack.callback(side.stack.close)
        lab = Pair(
            db_url=db_url, db=db, broker_url=broker.url, destination=unique_destination,
            seg=seg, client=seg.client(workdir / "client"), a=a, b=b,
        )  # fmt: skip
        pipeline.psql(db_url, pair_sql(seg, a, b))
        lab.relay = stack.enter_context(
            pipeline.relay(
                database_url=db_url,
                stomp_url=broker.url,
                destination=unique_destination,
                log=workdir / "relay.log",
            )
        )
        yield lab


NORMAL = ("normal", "normal")
INTERRUPTED = ("communications-interrupted", "normal")  # the partner was last seen normal


def start_pair(pair: Pair, mac: str) -> None:
    """Add a reservation for ``mac``, start both generators (which start both dhcpd) and
    wait until both peers are normal."""
    a, b = pair.a, pair.b
    pair.add_host("fo-client", mac, pair.ip(20))
    started = time.monotonic()
    for side in (a, b):
        pair.start_generator(side)
    pair.wait(
        lambda: all(s.holds(mac, pair.ip(20)) and s.server.running() for s in (a, b)),
        START_DEADLINE,
        "both generators' first render and dhcpd start",
    )
    for side in (a, b):
        text = side.conf_text()
        assert f'failover peer "{PAIR}" {{' in text
        assert f"  {'primary' if side is a else 'secondary'};" in text
        assert (f"mclt {MCLT};" in text) is (side is a)
    pair.wait_states({a.name: NORMAL, b.name: NORMAL}, "both peers normal")
    print(f"normal {time.monotonic() - started:.2f} s after the generators started")


def test_the_secondary_serves_while_the_primary_is_down_and_both_serve_after(pair: Pair) -> None:
    a, b = pair.a, pair.b
    mac, late_mac = new_mac(), new_mac()

    # a. both peers reach normal
    start_pair(pair, mac)

    # b. the client gets its reservation
    pair.serves(mac, lambda got: got == pair.ip(20), "b: the reservation")

    # c. the primary machine is gone: its generator and its dhcpd, SIGKILLed
    pair.kill_generator(a)
    a.kill_dhcpd()
    killed = time.monotonic()
    pair.serves(mac, lambda got: got == pair.ip(20), "c: the reservation, from the survivor")
    print(f"c: served {time.monotonic() - killed:.2f} s after the SIGKILL")
    pool = pair.serves(new_mac(), lambda got: configs.in_pool(pair.seg.servers[0], got), "c: pool")
    print(f"c: pool address {pool} {time.monotonic() - killed:.2f} s after the SIGKILL")
    pair.wait_states({b.name: INTERRUPTED}, "c: the survivor knows its partner is gone")

    # d. a reservation committed while the primary is down is served by the survivor
    pair.add_host("fo-late", late_mac, pair.ip(21))
    pair.wait_applied(b, late_mac, pair.ip(21), "d: the survivor's generator applied it")
    pair.serves(late_mac, lambda got: got == pair.ip(21), "d: the late reservation")
    assert not a.holds(late_mac, pair.ip(21))  # the primary's file was left as it was

    # e. the primary comes back: dhcpd on the file it had, then its generator
    back = time.monotonic()
    a.start_dhcpd_plainly()
    pair.start_generator(a)
    pair.wait_applied(a, late_mac, pair.ip(21), "e: the primary's generator caught up")
    pair.wait_states({a.name: NORMAL, b.name: NORMAL}, "e: both peers normal again")
    print(f"e: normal again {time.monotonic() - back:.2f} s after the primary's restart")
    # only the primary is left to answer: whatever answers now is the primary
    b.kill_dhcpd()
    pair.serves(late_mac, lambda got: got == pair.ip(21), "e: the late reservation, from a")
    pair.serves(mac, lambda got: got == pair.ip(20), "e: the first reservation, from a")
    pair.wait_states({a.name: INTERRUPTED}, "e: the primary knows its partner is gone")
    for side in (a, b):
        applies = {k: side.applies(k) for k in ("restart", "omapi", "unchanged")}
        print(f"{side.name}'s generator: applies {applies}")


def test_a_silently_lost_primary_is_noticed_after_the_max_response_delay(pair: Pair) -> None:
    """The primary's machine vanishes without a word (its segment link cut first, so no
    connection is closed): the survivor answers the reservation at once (both peers of
    a pair answer reservations, which are no pool's), and calls its partner unreachable
    (communications-interrupted: it then gives pool addresses to every client, not only
    its half of the load balancing) after max-response-delay."""
    a, b = pair.a, pair.b
    mac = new_mac()
    start_pair(pair, mac)

    netns._ip("-n", a.view.server_ns, "link", "set", a.view.server_if, "down")
    pair.kill_generator(a)
    a.kill_dhcpd()
    lost = time.monotonic()
    assert b.failover_state() == NORMAL  # it was told nothing
    pair.serves(mac, lambda got: got == pair.ip(20), "the reservation, at once")
    served = time.monotonic() - lost
    pair.wait_states({b.name: INTERRUPTED}, "the survivor calls its partner unreachable")
    noticed = time.monotonic() - lost
    print(f"reservation served {served:.2f} s, partner unreachable {noticed:.2f} s after the loss")
    assert served < noticed
    pool = pair.serves(new_mac(), lambda got: configs.in_pool(pair.seg.servers[0], got), "pool")
    print(f"pool address {pool} {time.monotonic() - lost:.2f} s after the loss")


def test_a_replaced_primary_recovers_for_one_mclt_while_the_secondary_serves_alone(
    pair: Pair,
) -> None:
    """A new primary machine (no lease file) starts in recover: its partner, told so,
    goes to partner-down and serves every client alone; the new primary waits in
    recover-wait until one MCLT has passed since its start, then both are normal.
    This is why the pair's MCLT bounds how long replacing a server takes."""
    a, b = pair.a, pair.b
    mac = new_mac()
    start_pair(pair, mac)

    pair.kill_generator(a)
    a.kill_dhcpd()
    a.wipe()
    replaced = time.monotonic()
    pair.start_generator(a)  # renders a fresh file and starts dhcpd on it
    pair.wait_states(
        {a.name: ("recover-wait", "partner-down"), b.name: ("partner-down", "recover-wait")},
        "the new primary in recover-wait, the secondary in partner-down",
    )
    print(f"recover-wait {time.monotonic() - replaced:.2f} s after the replacement started")
    pair.serves(mac, lambda got: got == pair.ip(20), "recover-wait: the reservation")
    pool = pair.serves(new_mac(), lambda got: configs.in_pool(pair.seg.servers[0], got), "pool")
    assert b.failover_state() == ("partner-down", "recover-wait")
    print(f"recover-wait: pool address {pool} (from the secondary in partner-down)")

    pair.wait_states({a.name: NORMAL, b.name: NORMAL}, "both normal after the recovery")
    took = time.monotonic() - replaced
    print(f"normal {took:.2f} s after the replacement started (MCLT {MCLT} s)")
    assert took >= MCLT - 1  # the wait is the MCLT's: 1 s for the clocks' granularity
