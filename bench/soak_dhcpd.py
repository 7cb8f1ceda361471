"""The soak's real DHCP server: ISC dhcpd in a network namespace, its OMAPI key, the
reload command the generator restarts it with, and the final audit of what it serves.

dhcpd runs in the server namespace of a ``tests/e2e/netns.py`` link with a control
link, so the generator (in the soak's own namespace) reaches its OMAPI port at
``net.control_ip`` over a connected route. Everything that starts or stops it, the
generator's reload command and the chaos thread alike, holds one file lock
(``flock``), so two starts never race for the interface and the OMAPI port.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import secrets
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import soak_env

from generator import omapi
from tests.e2e import netns

KEY_NAME = "soak-omapi"
START_TIMEOUT = 30.0  # seconds for reload_dhcpd.sh (stop, start, config read)
DEATH_DEADLINE = 5.0  # seconds for a SIGKILLed dhcpd to be gone (or a zombie)
CONNECT_DEADLINE = 15.0  # seconds for the audit's OMAPI session
LOOKUP_ATTEMPTS = 3  # per MAC, across reconnects
LOCK_WAIT = 60.0  # seconds anyone waits for the start/stop lock

RELOAD_WRAPPER = """#!/bin/sh
# The generator's reload command: restart the soak's dhcpd with the file handed over
# (tests/e2e/reload_dhcpd.sh: SIGTERM, then a start that exits non-zero when dhcpd
# refuses the config), under the lock the chaos thread takes too.
# One line per call: unix time, accepted|rejected, sha256 of the file dhcpd was given.
# flock -o: the daemonized dhcpd must not inherit the lock (it would hold it forever).
conf="${{DHCP_CONFIG:?DHCP_CONFIG is not set}}"
sum="$(sha256sum "$conf" | cut -d' ' -f1)"
verdict=rejected
flock -o -w {wait:.0f} {lock} {restart} >/dev/null 2>>{errors} && verdict=accepted
printf '%s %s %s\\n' "$(date +%s.%N)" "$verdict" "$sum" >> {log}
[ "$verdict" = accepted ]
"""


def write_key(path: Path) -> omapi.Key:
    """A fresh random OMAPI key as a dhcpd ``key`` statement, mode 0600."""
    key = omapi.Key(
        name=KEY_NAME,
        algorithm=omapi.ALGORITHM,
        secret=base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f'key {key.name} {{ algorithm {key.algorithm}; secret "{key.secret}"; }};\n')
    os.chmod(path, 0o600)
    return key


class Dhcpd:
    """The dhcpd of one soak run, started and stopped only through ``reload_dhcpd.sh``.

    ``lock`` (a thread lock) is held by the chaos thread while dhcpd is down on
    purpose, so the monitor can tell a planned death from a crash; ``file_lock()``
    is the lock every start and stop takes, the generator's reload command included.
    """

    name = "dhcpd"

    def __init__(self, net: netns.Link, paths: soak_env.Paths, omapi_port: int) -> None:
        self.net = net
        self.paths = paths
        self.omapi_port = omapi_port
        self.server = netns.IscServer(
            net=net,
            conf=paths.output,
            leases=paths.leases,
            pid_file=paths.dhcpd_pid,
            log=paths.logs / "dhcpd.log",
            stamp_file=None,
        )
        self.lock = threading.Lock()
        self.starts = 0  # by the soak (chaos or monitor); the generator's are in reloads.log
        self.crashes: list[str] = []

    @property
    def omapi_address(self) -> str:
        return f"{self.net.control_ip}:{self.omapi_port}"

    def write_reload_wrapper(self) -> None:
        script = RELOAD_WRAPPER.format(
            wait=LOCK_WAIT,
            lock=shlex.quote(str(self.paths.dhcpd_lock)),
            restart=" ".join(shlex.quote(part) for part in self.server.reload_command),
            errors=shlex.quote(str(self.paths.logs / "reload-errors.log")),
            log=shlex.quote(str(self.paths.reload_log)),
        )
        self.paths.reload_wrapper.write_text(script)
        self.paths.reload_wrapper.chmod(0o755)

    @contextlib.contextmanager
    def file_lock(self, *, blocking: bool = True) -> Iterator[bool]:
        """The start/stop lock; yields False when ``blocking`` is off and it is taken.
        Waits at most ``LOCK_WAIT`` seconds (then RuntimeError)."""
        deadline = time.monotonic() + LOCK_WAIT
        with open(self.paths.dhcpd_lock, "a") as handle:  # not inherited by children
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not blocking:
                        yield False
                        return
                    if time.monotonic() > deadline:
                        held = f"{self.paths.dhcpd_lock} held for {LOCK_WAIT:.0f} s"
                        raise RuntimeError(held) from None
                    time.sleep(0.02)
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def pid(self) -> int | None:
        return self.server.pid()

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return comm == "dhcpd" and stat.rpartition(")")[2].split()[0] != "Z"

    def _restart(self) -> None:
        """reload_dhcpd.sh: stop whatever runs, start with the files in place."""
        done = subprocess.run(
            self.server.reload_command,
            capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"dhcpd did not start: {done.stderr.strip()[-300:]}")
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would; wait until it is gone."""
        with self.file_lock():
            pid = self.pid()
            if pid is None or not self.running():
                return
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + DEATH_DEADLINE
            while self.running():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dhcpd {pid} still runs after SIGKILL")
                time.sleep(0.02)

    def start_if_stopped(self) -> str:
        """A plain start with the same files, as a supervisor would; a note when the
        generator's reload command had started it meanwhile."""
        with self.file_lock():
            if self.running():
                return "already started again by the generator's reload command"
            self._restart()
        return ""

    def restart(self) -> None:
        """A plain restart (SIGTERM, start), as an operator's ``systemctl restart``."""
        with self.file_lock():
            self._restart()

    def restart_if_crashed(self) -> None:
        """Note and restart a death nobody planned (a crash is a finding)."""
        if not self.paths.output.exists() or not self.lock.acquire(blocking=False):
            return  # the generator has not started it yet, or it is down on purpose
        try:
            with self.file_lock(blocking=False) as locked:
                if locked and self.pid() is not None and not self.running():
                    self.crashes.append(f"dhcpd {self.pid()} died")
                    self._restart()
        finally:
            self.lock.release()

    def stop(self) -> None:
        with self.file_lock():
            self.server.stop()


# ---- the final audit: what dhcpd serves, MAC by MAC ------------------------------------


@dataclass(frozen=True)
class Reservation:
    name: str  # the host declaration name, <hostname>-<mac with dashes>
    ip: str


@dataclass
class Audit:
    """Every looked-up MAC compared with the database's reservations of the scope."""

    expected: int = 0  # reservations of the scope in the database
    looked_up: int = 0  # MACs asked for (the reservations and every other MAC ever used)
    served_right: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    error: str = ""

    def note(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < 50:
            self.problems.append(problem)

    @property
    def equal(self) -> bool:
        return not self.error and self.problem_count == 0 and self.served_right == self.expected


def declaration_name(hostname: str, mac: str) -> str:
    return f"{hostname.lower()}-{mac.lower().replace(':', '-')}"


def audit(
    dhcpd: Dhcpd, key: omapi.Key, expected: dict[str, Reservation], others: Iterable[str]
) -> Audit:
    """Look up every MAC of ``expected`` (must be served as given) and of ``others``
    (must not be served at all) in the running dhcpd over OMAPI."""
    result = Audit(expected=len(expected))
    began = time.monotonic()
    client = omapi.Client(host=str(dhcpd.net.control_ip), port=dhcpd.omapi_port, key=key)
    try:
        _connect(client)
        for mac in sorted(expected):
            want = expected[mac]
            got = _lookup(client, mac)
            result.looked_up += 1
            if got is None:
                result.note(f"MAC {mac}: database has {want.name} at {want.ip}, dhcpd has nothing")
            elif (got.name, got.ip) != (want.name, want.ip):
                result.note(
                    f"MAC {mac}: database has {want.name} at {want.ip},"
                    f" dhcpd has {got.name} at {got.ip}"
                )
            else:
                result.served_right += 1
        for mac in sorted(set(others) - set(expected)):
            got = _lookup(client, mac)
            result.looked_up += 1
            if got is not None:
                result.note(
                    f"MAC {mac}: no reservation in the scope, dhcpd has {got.name} at {got.ip}"
                )
    except omapi.OmapiError as exc:
        result.error = str(exc)
    finally:
        client.close()
        result.seconds = time.monotonic() - began
    return result


def _connect(client: omapi.Client) -> None:
    deadline = time.monotonic() + CONNECT_DEADLINE
    while True:
        try:
            client.connect()
            return
        except omapi.Unreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _lookup(client: omapi.Client, mac: str) -> omapi.Host | None:
    for attempt in range(1, LOOKUP_ATTEMPTS + 1):
        try:
            return client.lookup_by_mac(mac)
        except omapi.Unreachable:
            if attempt == LOOKUP_ATTEMPTS:
                raise
            _connect(client)
    raise AssertionError("unreachable")
