"""End to end: a Kea HA pair in hot-standby; the standby takes over, the primary returns.

Two kea-dhcp4, each with its kea-ctrl-agent, in the two server namespaces of one bridged
segment (``segment.py``), and a busybox udhcpc on the same bridge. Everything they run
comes from the machine database, driven only by SQL: psql -> triggers -> cdc-relay ->
ActiveMQ -> one dhcp-generator per server (``--server``, a consumer queue of its own),
each writing its server's kea-dhcp4.conf (the HA hook from the ``dhcp_failover`` row,
test timers: heartbeat 1 s, partner-down 3 s after the last answer, no unacked clients
to wait for) and the reservations into that server's own Kea hosts database. Each
agent's config comes from the generator's one-shot ``--kea-ctrl-agent-config``.

One hosts database per server, not one shared: a generator owns every DHCPv4 row of
its database (``generator.kea_hosts``), so two generators on one table would each
rewrite it to their own state, and a lagging one would undo the other's newer rows
until it caught up. With one each, a server's reservations come from its own
generator, and the returning primary's catch-up is seen in its own table.

The HA state is read with ``ha-heartbeat`` through each server's agent (from inside its
namespace: the agent listens only on the segment); the server that answered the client
is told by the DHCP server identifier. Checked: both servers reach ``hot-standby``, the
primary serving its scope and the standby serving none (it receives the client's
packets and sends nothing); SIGKILL of the primary's kea-dhcp4, agent and generator
brings the standby to ``partner-down``, after which it serves a reservation, a pool
lease, and a reservation committed while the primary is down; the restarted primary
syncs its leases from the standby, both return to ``hot-standby``, and the primary
serves the reservation committed in its absence.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.conftest import require
from tests.e2e import configs, netns, pipeline, segment
from tests.e2e.conftest import new_mac
from tests.integration import kea_hosts_support as khs

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd, pytest.mark.pg, pytest.mark.broker]

KEA_CTRL_AGENT = "/usr/sbin/kea-ctrl-agent"
AGENT_PORT = 8001  # each agent on its own server's segment address
PAIR = "kea-pair"
SERVERS = ("dhcp-a", "dhcp-b")  # the primary, the standby
# The test profile of the pair's timers (milliseconds, and a count).
HEARTBEAT_DELAY_MS = 1000
MAX_RESPONSE_DELAY_MS = 3000
MAX_ACK_DELAY_MS = 1000
MAX_UNACKED_CLIENTS = 0  # partner-down as soon as heartbeats fail: no client to wait for
HOSTS = {"reserved": 20, "late": 21}  # host numbers of the reservations on the segment

START_DEADLINE = 60.0  # seconds from the pipeline's start until both serve their roles
TAKEOVER_DEADLINE = 20.0  # seconds from the SIGKILL until the standby is partner-down
CHANGE_DEADLINE = 30.0  # seconds from a commit (or a state) until the client sees it
AGENT_DEADLINE = 15.0  # seconds for an agent to answer after its start
HTTP_TIMEOUT = 2.0  # seconds for one command through an agent
PROBE_TIMEOUT = 10.0  # seconds for the process that sends it
POLL = 0.1  # seconds between looks at the HA state

# Sends one command to an agent: run inside a server namespace, where the agent listens.
_POST = (
    "import sys, urllib.request\n"
    "request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),"
    " headers={'Content-Type': 'application/json'})\n"
    "with urllib.request.urlopen(request, timeout=float(sys.argv[3])) as answer:\n"
    "    sys.stdout.write(answer.read().decode())\n"
)
# The udhcpc event script: the bound address and the server that gave it.
_CLIENT_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew) echo "$ip $serverid" > "{out}.tmp" && mv "{out}.tmp" "{out}" ;;
esac
exit 0
"""


@dataclass(frozen=True, kw_only=True)
class Side:
    """One server of the pair: its namespace, files, hosts database and queue."""

    name: str
    link: netns.Link
    workdir: Path
    writer: str  # the generator's URL of the server's Kea hosts database
    reader: str  # Kea's URL of it (the test cluster's unix socket)
    consumer: str

    @property
    def address(self) -> str:
        return str(self.link.server_ip)

    @property
    def agent_conf(self) -> Path:
        return self.workdir / "kea-ctrl-agent.conf"

    def generator_args(self) -> list[str]:
        args = [*pipeline.kea_args(self.workdir), "--server", self.name]
        return [*args, "--kea-hosts-database", self.writer, "--kea-hosts-reader", self.reader]


@dataclass(frozen=True, kw_only=True)
class Agent:
    side: Side
    process: subprocess.Popen[bytes]
    log: Path


@dataclass(frozen=True, kw_only=True)
class Lease:
    address: str
    server: str  # the DHCP server identifier of the answer


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def seg() -> Iterator[segment.Segment]:
    ok, missing = netns.available()
    require(ok, missing)
    with segment.segment(servers=2) as made:
        yield made


@pytest.fixture
def kea_dbs(pg_cluster: Any) -> Iterator[list[tuple[str, str]]]:
    """Two Kea hosts databases, one per server: (the generator's URL, Kea's URL) each."""
    require(khs.have_kea_admin(), "kea-admin (apt-get install kea-admin)")
    khs.init_template(pg_cluster.url(), "127.0.0.1", pg_cluster.port)
    maker = khs.databases(pg_cluster.url())
    make = next(maker)
    found = []
    for _ in SERVERS:
        name = make(khs.TEMPLATE)
        reader = (
            f"postgresql://{khs.READER}@/{name}?host={pg_cluster.socket_dir}&port={pg_cluster.port}"
        )
        found.append((khs.url(pg_cluster.url(), name, khs.WRITER), reader))
    yield found
    next(maker, None)


@pytest.fixture
def need_ctrl_agent() -> None:
    require(Path(KEA_CTRL_AGENT).exists(), "kea-ctrl-agent (apt-get install kea-ctrl-agent)")


# -- the pair in the database -----------------------------------------------------------


def host_sql(hostname: str, mac: str, ip: ipaddress.IPv4Address) -> str:
    return (
        f"WITH h AS (INSERT INTO host (hostname) VALUES ('{hostname}') RETURNING id)"
        f" INSERT INTO interface (host_id, mac, ip) SELECT id, '{mac}', '{ip}' FROM h"
    )


def pair_sql(seg: segment.Segment, primary: Side, standby: Side) -> str:
    """The subnet, both servers serving it, and the pair with the test timers."""
    first, last = configs.pool_range(primary.link)
    return ";\n".join(
        [
            "INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time)"
            f" VALUES ('ha-segment', '{seg.network}', '{seg.host(1)}', '{first}', '{last}', 600)",
            f"INSERT INTO dhcp_server (name) VALUES ('{primary.name}'), ('{standby.name}')",
            "INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id)"
            " SELECT s.id, n.id FROM dhcp_server s, subnet n WHERE n.name = 'ha-segment'",
            "INSERT INTO dhcp_failover (name, mode, primary_server_id, secondary_server_id,"
            " primary_address, primary_port, secondary_address, secondary_port,"
            " heartbeat_delay_ms, max_response_delay_ms, max_ack_delay_ms, max_unacked_clients)"
            f" SELECT '{PAIR}', 'kea-hot-standby', p.id, s.id,"
            f" '{primary.address}', {AGENT_PORT}, '{standby.address}', {AGENT_PORT},"
            f" {HEARTBEAT_DELAY_MS}, {MAX_RESPONSE_DELAY_MS}, {MAX_ACK_DELAY_MS},"
            f" {MAX_UNACKED_CLIENTS}"
            f" FROM dhcp_server p, dhcp_server s"
            f" WHERE p.name = '{primary.name}' AND s.name = '{standby.name}'",
        ]
    )


# -- Kea and its agent ------------------------------------------------------------------


def bootstrap_conf(workdir: Path) -> str:
    """The file kea-dhcp4 starts with before its generator's first config-reload: its
    socket and lease file, no subnet, so it serves nothing until the pair's config."""
    paths = netns.kea_paths(workdir)
    config = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["*"]},
            "control-socket": {"socket-type": "unix", "socket-name": str(paths["control_socket"])},
            "lease-database": {"type": "memfile", "name": str(paths["lease_file"])},
            "subnet4": [],
        }
    }
    return json.dumps(config, indent=2) + "\n"


def render_agent_conf(side: Side, db_url: str) -> None:
    """The generator's one-shot: this server's kea-ctrl-agent config."""
    paths = netns.kea_paths(side.workdir)
    argv = [pipeline.command("dhcp-generator"), "--format", "kea", "--server", side.name]
    argv += ["--kea-control-socket", str(paths["control_socket"])]
    argv += ["--kea-ctrl-agent-config", str(side.agent_conf)]
    done = subprocess.run(
        argv,
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0 or not side.agent_conf.exists():
        pytest.fail(
            f"dhcp-generator --kea-ctrl-agent-config exited {done.returncode}:"
            f"\n{done.stdout}{done.stderr}",
            pytrace=False,
        )


def agent_command(
    side: Side, command: str, arguments: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """One command for the server's kea-dhcp4, through its agent; None without an answer."""
    body: dict[str, Any] = {"command": command, "service": ["dhcp4"]}
    if arguments is not None:
        body["arguments"] = arguments
    url = f"http://{side.address}:{AGENT_PORT}/"
    argv = ["ip", "netns", "exec", side.link.server_ns, sys.executable, "-I", "-S", "-c", _POST]
    try:
        done = subprocess.run(
            [*argv, url, json.dumps(body), str(HTTP_TIMEOUT)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        return None
    if isinstance(answer, list):  # the agent answers a list, one entry per service
        answer = answer[0] if answer else None
    return answer if isinstance(answer, dict) else None


def ha_state(side: Side) -> tuple[str | None, list[str]]:
    """The server's HA state and the scopes it serves (``ha-heartbeat``)."""
    answer = agent_command(side, "ha-heartbeat")
    if answer is None or answer.get("result") != 0:
        return None, []
    arguments = answer.get("arguments") or {}
    return arguments.get("state"), list(arguments.get("scopes") or [])


def statistic(side: Side, name: str) -> int | None:
    """A kea-dhcp4 statistic's current value, through the agent."""
    answer = agent_command(side, "statistic-get", {"name": name})
    if answer is None or answer.get("result") != 0:
        return None
    samples = (answer.get("arguments") or {}).get(name) or []
    return int(samples[0][0]) if samples else 0


@contextlib.contextmanager
def ctrl_agent(side: Side) -> Iterator[Agent]:
    """kea-ctrl-agent in the server's namespace, from its rendered config; killed on exit."""
    log = side.workdir / "kea-ctrl-agent.log"
    env = {
        **os.environ,
        "KEA_PIDFILE_DIR": str(side.workdir),
        "KEA_LOCKFILE_DIR": str(side.workdir),
    }
    argv = ["ip", "netns", "exec", side.link.server_ns, KEA_CTRL_AGENT, "-c", str(side.agent_conf)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    agent = Agent(side=side, process=process, log=log)

    def answers() -> bool:
        if process.poll() is not None:
            raise netns.HarnessError(f"kea-ctrl-agent exited {process.returncode}; see {log}")
        return agent_command(side, "version-get") is not None

    try:
        netns.wait_until(answers, AGENT_DEADLINE, f"{side.name}'s kea-ctrl-agent")
        yield agent
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(netns.STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def sigkill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


# -- the client -------------------------------------------------------------------------


def request(client: netns.Client, mac: str) -> Lease | None:
    """One fresh DISCOVER..ACK as ``mac``: the address and the server that gave it."""
    client.set_mac(mac)
    out = client.workdir / f"lease-{uuid.uuid4().hex[:8]}"
    script = client.workdir / f"{out.name}.sh"
    script.write_text(_CLIENT_SCRIPT.format(out=out))
    script.chmod(0o755)
    try:
        cmd = ["ip", "netns", "exec", client.net.client_ns, "busybox", "udhcpc"]
        cmd += ["-i", client.net.client_if, "-n", "-q", "-f", "-s", str(script)]
        cmd += ["-t", str(netns.DISCOVER_TRIES), "-T", str(netns.DISCOVER_PAUSE), "-A", "1"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(cmd, capture_output=True, timeout=netns.CLIENT_TIMEOUT, check=False)
        if not out.exists():
            return None
        address, _, server = out.read_text().strip().partition(" ")
        return Lease(address=address, server=server)
    finally:
        out.unlink(missing_ok=True)
        script.unlink(missing_ok=True)


# -- the test ---------------------------------------------------------------------------


class Watch:
    """Waits with deadlines; a failure shows every daemon's and server's log."""

    def __init__(self) -> None:
        self.daemons: list[pipeline.Daemon] = []
        self.logs: list[Path] = []
        self.started = time.monotonic()

    def until(
        self,
        condition: Callable[[], Any],
        what: str,
        deadline: float,
        detail: Callable[[], str] = str,
    ) -> Any:
        """``condition()`` once it is truthy; a failure after ``deadline`` s names
        ``what`` and ``detail()``, and shows the logs."""

        def check() -> Any:
            for daemon in self.daemons:
                if not daemon.alive():
                    self.fail(f"{daemon.name} exited while waiting for {what}")
            return condition()

        try:
            return netns.wait_until(check, deadline, what)
        except netns.HarnessError as exc:
            timed_out = f"{exc} {detail()}"
        self.fail(timed_out)

    def fail(self, message: str) -> NoReturn:
        tails = [daemon.tail() for daemon in self.daemons]
        for path in self.logs:
            if path.exists():
                tails.append(f"--- {path}:\n{path.read_text(errors='replace')[-3000:]}")
        pytest.fail(f"{message}\n" + "\n".join(tails), pytrace=False)

    def note(self, what: str) -> None:
        print(f"{time.monotonic() - self.started:6.2f} s  {what}")


def test_kea_hot_standby_takeover_and_return(
    need_kea: None,
    need_ctrl_agent: None,
    db_url: str,
    broker: Any,
    unique_destination: str,
    seg: segment.Segment,
    kea_dbs: list[tuple[str, str]],
    workdir: Path,
) -> None:
    require(pipeline.have_commands(), "the cdc-relay and dhcp-generator commands")
    require(shutil.which("psql") is not None, "psql")
    tag = uuid.uuid4().hex[:8]
    sides = []
    for name, link, (writer, reader) in zip(SERVERS, seg.servers, kea_dbs, strict=True):
        (workdir / name).mkdir()
        sides.append(
            Side(
                name=name,
                link=link,
                workdir=workdir / name,
                writer=writer,
                reader=reader,
                consumer=f"e2eha{tag}{name[-1]}",
            )
        )
    primary, standby = sides
    client = seg.client(workdir / "client")
    reserved, late, roaming = new_mac(), new_mac(), new_mac()
    reserved_ip, late_ip = (str(seg.host(HOSTS[k])) for k in ("reserved", "late"))
    pipeline.psql(
        db_url,
        pair_sql(seg, primary, standby)
        + ";\n"
        + host_sql("ha-reserved", reserved, seg.host(HOSTS["reserved"])),
    )

    watch = Watch()
    with contextlib.ExitStack() as stack:
        watch.daemons.append(
            stack.enter_context(
                pipeline.relay(
                    database_url=db_url,
                    stomp_url=broker.url,
                    destination=unique_destination,
                    log=workdir / "relay.log",
                )
            )
        )

        def generator(side: Side) -> pipeline.Daemon:
            daemon = stack.enter_context(
                pipeline.generator(
                    database_url=db_url,
                    stomp_url=broker.url,
                    destination=unique_destination,
                    consumer=side.consumer,
                    args=side.generator_args(),
                    log=side.workdir / "generator.log",
                )
            )
            watch.daemons.append(daemon)
            return daemon

        kea: dict[str, netns.KeaServer] = {}
        agents: dict[str, Agent] = {}
        generators: dict[str, pipeline.Daemon] = {}
        for side in sides:
            paths = netns.kea_paths(side.workdir)
            paths["conf"].write_text(bootstrap_conf(side.workdir))
            kea[side.name] = stack.enter_context(netns.kea_dhcp4(side.link, side.workdir))
            watch.logs += [paths["log"], side.workdir / "kea-ctrl-agent.log"]
            render_agent_conf(side, db_url)
            agents[side.name] = stack.enter_context(ctrl_agent(side))
            generators[side.name] = generator(side)

        def in_table(side: Side, mac: str) -> bool:
            return any(row[1] == mac for row in khs.table_rows(side.writer))

        def roles_taken() -> bool:
            serving = ha_state(primary) == ("hot-standby", [primary.name])
            return serving and ha_state(standby) == ("hot-standby", [])

        # 1. Both servers reach hot-standby: the primary serving its scope, the standby none.
        watch.until(
            lambda: roles_taken() and in_table(primary, reserved) and in_table(standby, reserved),
            "both servers in hot-standby with the reservation in their hosts tables",
            START_DEADLINE,
        )
        watch.note("both in hot-standby, primary serving")

        def served(mac: str, predicate: Callable[[Lease | None], bool], what: str) -> Lease:
            seen: list[Lease | None] = []

            def attempt() -> bool:
                seen.append(request(client, mac))
                return predicate(seen[-1])

            watch.until(attempt, what, CHANGE_DEADLINE, lambda: f"(answers: {seen})")
            lease = seen[-1]
            assert lease is not None
            watch.note(f"{what}: {lease.address} from {lease.server}")
            return lease

        # 2. The client gets its reservation, from the primary; the standby, which sees
        # the same packets, answers none of them.
        served(
            reserved,
            lambda lease: lease == Lease(address=reserved_ip, server=primary.address),
            "the reservation from the primary",
        )
        assert (statistic(standby, "pkt4-received") or 0) > 0, "the standby saw no packet"
        assert statistic(standby, "pkt4-offer-sent") == 0, "the standby answered in hot-standby"
        assert statistic(standby, "pkt4-ack-sent") == 0, "the standby answered in hot-standby"

        # 3. SIGKILL the primary's kea-dhcp4, agent and generator: the standby goes to
        # partner-down and then serves the reservation and the pool.
        killed = time.monotonic()
        sigkill(kea[primary.name].process)
        sigkill(agents[primary.name].process)
        watch.daemons.remove(generators[primary.name])
        sigkill(generators[primary.name].process)
        watch.until(
            lambda: ha_state(standby) == ("partner-down", [primary.name]),
            "the standby in partner-down, serving the primary's scope",
            TAKEOVER_DEADLINE,
        )
        watch.note(f"standby in partner-down {time.monotonic() - killed:.2f} s after SIGKILL")
        served(
            reserved,
            lambda lease: lease == Lease(address=reserved_ip, server=standby.address),
            "the reservation from the standby",
        )
        watch.note(f"standby answered {time.monotonic() - killed:.2f} s after SIGKILL")
        pool_lease = served(
            roaming,
            lambda lease: (
                lease is not None
                and lease.server == standby.address
                and configs.in_pool(primary.link, lease.address)
            ),
            "an unreserved MAC: a pool lease from the standby",
        )

        # 4. A reservation committed while the primary is down reaches the standby (its
        # generator writes the standby's table) and is served by it.
        pipeline.psql(db_url, host_sql("ha-late", late, seg.host(HOSTS["late"])))
        committed = time.monotonic()
        # The client asks once the row is in the table: asked before, Kea offers a pool
        # address, NAKs the request for it if the row lands in between, and udhcpc waits
        # 3 s after a NAK (measured: bench/pair_served_latency.py --udhcpc).
        watch.until(
            lambda: in_table(standby, late), "the late reservation in the standby's table",
            CHANGE_DEADLINE,
        )  # fmt: skip
        watch.note(f"late reservation in the standby's table {time.monotonic() - committed:.2f} s")
        served(
            late,
            lambda lease: lease == Lease(address=late_ip, server=standby.address),
            "the reservation committed while the primary is down, from the standby",
        )
        assert not in_table(primary, late), "the dead primary's generator wrote its table"

        # 5. The primary comes back (kea-dhcp4 from its generator's file, agent,
        # generator): it syncs from the standby, both return to hot-standby, and its
        # generator catches its table up, so it serves the late reservation too.
        returned = time.monotonic()
        kea[primary.name] = stack.enter_context(netns.kea_dhcp4(primary.link, primary.workdir))
        agents[primary.name] = stack.enter_context(ctrl_agent(primary))
        generators[primary.name] = generator(primary)
        watch.until(
            lambda: roles_taken() and in_table(primary, late),
            "the returned primary in hot-standby with the late reservation in its table",
            START_DEADLINE,
        )
        watch.note(f"primary back in hot-standby {time.monotonic() - returned:.2f} s after start")
        # The pool lease the standby gave while the primary was down reached the primary
        # by the lease sync (lease_cmds): its own lease file never saw that client.
        synced = agent_command(primary, "lease4-get-by-hw-address", {"hw-address": roaming})
        addresses = [
            lease["ip-address"]
            for lease in ((synced or {}).get("arguments") or {}).get("leases", [])
        ]
        assert addresses == [pool_lease.address], f"the primary's leases for {roaming}: {synced}"
        acks = statistic(standby, "pkt4-ack-sent")
        served(
            late,
            lambda lease: lease == Lease(address=late_ip, server=primary.address),
            "the late reservation from the returned primary",
        )
        assert statistic(standby, "pkt4-ack-sent") == acks, "the standby answered in hot-standby"
