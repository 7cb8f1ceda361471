"""A running kea-dhcp4 picks up a changed config through its control socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from generator import daemon as generator_daemon
from generator import kea_control, metrics, read, render_options, settings, syntax_check
from tests.integration import generator_support as gs
from tests.integration.inventory import seed

pytestmark = [pytest.mark.pg, pytest.mark.dhcpd]


@pytest.fixture
def kea_dir() -> Iterator[Path]:
    if syntax_check.find_binary("kea-dhcp4") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kea-dhcp4 is required under CI=true")
        pytest.skip("kea-dhcp4 is not installed")
    directory = Path(tempfile.mkdtemp(prefix="kea-"))  # short: socket paths are limited
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def reservations(socket_path: str) -> list[str]:
    answer = kea_control.command(socket_path, {"command": "config-get"})
    subnets = answer["arguments"]["Dhcp4"]["subnet4"]  # type: ignore[index]
    return sorted(r["ip-address"] for s in subnets for r in s["reservations"])


def test_config_reload_through_control_socket(
    db_url: str, db: psycopg.Connection[Any], kea_dir: Path
) -> None:
    seed(db)
    sock = str(kea_dir / "ctrl")
    lease_file = str(kea_dir / "leases.csv")
    out = kea_dir / "kea.json"
    options = render_options.RenderOptions(control_socket=sock, lease_file=lease_file)
    first = settings.ApplySettings(fmt="kea", output=out, options=options)
    engine = read.make_engine(db_url)
    try:
        assert generator_daemon.render_pass(engine, config=first, metrics=metrics.Metrics())
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
        db.execute("UPDATE interface SET ip = '10.20.0.77' WHERE id = 3")
        done = gs.run_generator(
            "--once",
            "--format",
            "kea",
            "--database-url",
            db_url,
            "--output",
            str(out),
            "--kea-control-socket",
            sock,
            "--kea-lease-file",
            lease_file,
        )
        assert done.returncode == 0, done.stderr
        assert reservations(sock) == ["10.20.0.10", "10.20.0.77", "10.21.0.10"]
    finally:
        kea.terminate()
        kea.wait(timeout=30)
