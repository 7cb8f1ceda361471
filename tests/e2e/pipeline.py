"""The installed commands as subprocesses, and plain-SQL changes through ``psql``.

Shared by the end-to-end test and the latency benchmark (bench/e2e_latency.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from generator import omapi
from tests.e2e import netns

BIN = Path(sys.executable).parent  # the venv's bin: cdc-relay, dhcp-generator
STOP_DEADLINE = 15.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL = 40  # lines of a daemon's log shown in a failure message


def command(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def have_commands() -> bool:
    return all((BIN / name).exists() for name in ("cdc-relay", "dhcp-generator"))


@dataclass(frozen=True, kw_only=True)
class Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = LOG_TAIL) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            text = []
        state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        return f"--- {self.name} ({state}), {self.log}:\n" + "\n".join(text)

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def daemon(name: str, argv: Sequence[str], *, env: dict[str, str], log: Path) -> Iterator[Daemon]:
    """Run ``argv`` with output to ``log``; SIGTERM (then SIGKILL) on exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    try:
        yield Daemon(name=name, process=process, log=log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def relay(
    *, database_url: str, stomp_url: str, destination: str, log: Path
) -> contextlib.AbstractContextManager[Daemon]:
    env = {"DATABASE_URL": database_url, "STOMP_URL": stomp_url, "CDC_DESTINATION": destination}
    return daemon("cdc-relay", [command("cdc-relay")], env=env, log=log)


def generator(
    *,
    database_url: str,
    stomp_url: str,
    destination: str,
    consumer: str,
    args: Sequence[str],
    log: Path,
) -> contextlib.AbstractContextManager[Daemon]:
    env = {
        "DATABASE_URL": database_url,
        "STOMP_URL": stomp_url,
        "CDC_DESTINATION": destination,
        "DHCP_CONSUMER": consumer,
    }
    return daemon("dhcp-generator", [command("dhcp-generator"), *args], env=env, log=log)


def isc_args(server: netns.IscServer) -> list[str]:
    """Generator flags for ISC dhcpd in the harness: write its file, restart it to reload."""
    return [
        "--format", "isc",
        "--output", str(server.conf),
        "--reload-command", " ".join(server.reload_command),
    ]  # fmt: skip


def generator_flags() -> str:
    """The generator's --help text (to use optional flags only where they exist)."""
    done = subprocess.run(
        [command("dhcp-generator"), "--help"], capture_output=True, text=True, check=False
    )
    return done.stdout


def kea_lease_flag() -> str | None:
    """The generator's flag for Kea's lease file, if it has one."""
    flags = generator_flags()
    return next((f for f in ("--kea-lease-file", "--lease-file") if f in flags), None)


def kea_args(workdir: Path) -> list[str]:
    """Generator flags for kea-dhcp4 in the harness: its paths, config-reload by socket.

    Without a lease file flag the rendered config keeps Kea's packaged lease file path:
    run Kea with ``private_var_lib=True`` then.
    """
    paths = netns.kea_paths(workdir)
    args = [
        "--format", "kea",
        "--output", str(paths["conf"]),
        # "*": every interface of the server namespace, i.e. the veth. The generator
        # runs outside it, and `kea-dhcp4 -t` rejects an interface it cannot see.
        "--interface", "*",
        "--kea-control-socket", str(paths["control_socket"]),
    ]  # fmt: skip
    flag = kea_lease_flag()
    if flag is not None:
        args += [flag, str(paths["lease_file"])]
    return args


def psql(database_url: str, sql: str) -> None:
    """Run ``sql`` with the real psql client, as an operator would; fail loudly."""
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}\n{sql}")


def omapi_key_file(workdir: Path, name: str) -> tuple[omapi.Key, Path]:
    """A fresh OMAPI key, and the dhcpd ``key`` statement holding it in
    ``workdir/omapi.key`` (mode 0600, as the generator requires)."""
    secret = base64.b64encode(os.urandom(16)).decode()
    path = workdir / "omapi.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f'key {name} {{ algorithm hmac-md5; secret "{secret}"; }};\n')
    return omapi.Key(name=name, algorithm="hmac-md5", secret=secret), path
