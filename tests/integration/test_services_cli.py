"""``scripts/services.py start pg`` prints a DATABASE_URL that works: the database
exists and is migrated; ``stop`` stops the cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import services

from tests.conftest import ROOT, require_postgres

pytestmark = pytest.mark.pg

SCRIPT = ROOT / "scripts" / "services.py"
DEADLINE = 180.0  # seconds for one command; initdb and migrations on a busy 2-core machine


def services_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,  # not the repository: the command must not depend on it
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def printed_url(done: subprocess.CompletedProcess[str]) -> str:
    """stdout holds only KEY=value lines, so a shell can eval it."""
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("DATABASE_URL="), done.stdout
    return lines[0].removeprefix("DATABASE_URL=")


def test_start_prints_a_migrated_database_and_stop_stops_it() -> None:
    require_postgres()
    # not under pytest's tmp_path: that is mode 0700 and the postgres user must enter it
    state = Path(tempfile.mkdtemp(prefix="machinedb-cli-"))
    try:
        started = services_cli("start", "pg", "--dir", str(state), cwd=state)
        url = printed_url(started)
        assert url.endswith("/machinedb")
        assert "database machinedb created, migrated to" in started.stderr
        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            conn.execute("INSERT INTO host (hostname) VALUES ('cli')")
            captured = conn.execute("SELECT table_name, op FROM cdc.change").fetchall()
        assert version is not None and f"migrated to {version[0]} (head)" in started.stderr
        assert captured == [("host", "INSERT")]

        services_cli("stop", "pg", "--dir", str(state), cwd=state)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2).close()

        # a second start finds the database and keeps its rows
        again = services_cli("start", "pg", "--dir", str(state), cwd=state)
        assert printed_url(again) == url
        assert "database machinedb existed, migrated to" in again.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT hostname FROM host").fetchall() == [("cli",)]
        services_cli("stop", "pg", "--dir", str(state), cwd=state)
    finally:
        services.PostgresCluster(state / "pg").destroy()  # stops it if a step failed
        shutil.rmtree(state, ignore_errors=True)
