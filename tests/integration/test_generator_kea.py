"""A running kea-dhcp4 picks up a changed config through its control socket, and gets
the previous one back when it refuses a new one."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from generator import kea_control, metrics, passes, read, render_options, settings, syntax_check
from tests.conftest import require
from tests.integration import generator_support as gs
from tests.integration.inventory import seed

pytestmark = [pytest.mark.pg, pytest.mark.dhcpd]


@pytest.fixture
def kea_dir() -> Iterator[Path]:
    require(syntax_check.find_binary("kea-dhcp4") is not None, "kea-dhcp4")
    directory = Path(tempfile.mkdtemp(prefix="kea-"))  # short: socket paths are limited
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def reservations(socket_path: str) -> list[str]:
    answer = kea_control.command(socket_path, {"command": "config-get"})
    subnets = answer["arguments"]["Dhcp4"]["subnet4"]  # type: ignore[index]
    return sorted(r["ip-address"] for s in subnets for r in s["reservations"])


@dataclass(frozen=True)
class Kea:
    """A kea-dhcp4 serving the seeded inventory, and the flags that render for it."""

    sock: str
    out: Path
    leases: str
    flags: list[str]


@pytest.fixture
def running_kea(db_url: str, db: psycopg.Connection[Any], kea_dir: Path) -> Iterator[Kea]:
    """Seed, render once, start kea-dhcp4 on that file and wait for its control socket."""
    seed(db)
    sock = str(kea_dir / "ctrl")
    leases = str(kea_dir / "leases.csv")
    out = kea_dir / "kea.json"
    options = render_options.RenderOptions(control_socket=sock, lease_file=leases)
    first = settings.ApplySettings(fmt="kea", output=out, options=options)
    engine = read.make_engine(db_url)
    try:
        assert passes.render_pass(engine, config=first, metrics=metrics.Metrics())
    finally:
        engine.dispose()
    env = {**os.environ, "KEA_PIDFILE_DIR": str(kea_dir), "KEA_LOCKFILE_DIR": str(kea_dir)}
    kea = subprocess.Popen(
        [str(syntax_check.find_binary("kea-dhcp4")), "-c", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        gs.wait_for(lambda: Path(sock).exists(), what="Kea's control socket")
        assert reservations(sock) == ["10.20.0.10", "10.20.0.11", "10.21.0.10"]
        flags = ["--format", "kea", "--database-url", db_url, "--output", str(out)]
        yield Kea(sock=sock, out=out, leases=leases, flags=[*flags, "--kea-control-socket", sock])
    finally:
        kea.terminate()
        kea.wait(timeout=30)


def test_config_reload_through_control_socket(
    db: psycopg.Connection[Any], running_kea: Kea
) -> None:
    db.execute("UPDATE interface SET ip = '10.20.0.77' WHERE id = 3")
    done = gs.run_generator("--once", *running_kea.flags, "--kea-lease-file", running_kea.leases)
    assert done.returncode == 0, done.stderr
    assert reservations(running_kea.sock) == ["10.20.0.10", "10.20.0.77", "10.21.0.10"]


def test_kea_refusing_config_reload_gets_the_previous_file_back(
    db: psycopg.Connection[Any], running_kea: Kea, kea_dir: Path
) -> None:
    """A lease file in a missing directory passes ``kea-dhcp4 -t`` but fails
    ``config-reload`` (and Kea 2.2 then serves nothing): the previous file must be put
    back and loaded again."""
    sock, out = running_kea.sock, running_kea.out
    before = out.read_text()
    served = reservations(sock)
    db.execute("UPDATE interface SET ip = '10.20.0.77' WHERE id = 3")
    missing = str(kea_dir / "missing" / "leases.csv")
    failed = gs.run_generator("--once", *running_kea.flags, "--kea-lease-file", missing)
    assert failed.returncode == 1, failed.stderr
    assert "unable to open" in failed.stderr
    assert "previous file restored and reloaded" in failed.stderr
    assert out.read_text() == before
    assert reservations(sock) == served  # Kea runs the previous config again
    loaded = (kea_dir / "kea.json.loaded").read_text().strip()
    assert loaded == hashlib.sha256(before.encode()).hexdigest()

    done = gs.run_generator("--once", *running_kea.flags, "--kea-lease-file", running_kea.leases)
    assert done.returncode == 0, done.stderr
    assert reservations(sock) == ["10.20.0.10", "10.20.0.77", "10.21.0.10"]
