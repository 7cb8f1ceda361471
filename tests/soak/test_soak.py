"""The chaos soak, short: 45 s of writes while every service is killed or restarted at
least once must lose no change, hand dhcpd no config it rejects, and end with the
daemon's dhcpd.conf identical to a fresh render (bench/soak.py, docs/reliability.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from generator import syntax_check
from tests.conftest import ROOT, have_activemq, require, require_postgres

pytestmark = [pytest.mark.slow, pytest.mark.pg, pytest.mark.broker, pytest.mark.dhcpd]

SOAK = ROOT / "bench" / "soak.py"
DURATION = 45  # seconds of load and faults
RUN_TIMEOUT = 140.0  # seconds for the whole run: setup, load, drain, teardown
CLEANUP_TIMEOUT = 60.0  # seconds the soak gets to stop its services after SIGTERM
FAULT_KINDS = {"relay", "generator", "broker", "postgres"}


def require_services() -> None:
    require_postgres()
    require(have_activemq(), "ActiveMQ (apt-get install activemq)")
    require(
        syntax_check.find_binary("dhcpd") is not None, "ISC dhcpd (apt-get install isc-dhcp-server)"
    )


def run_soak(results: Path) -> tuple[int, str]:
    """Run the soak; on a timeout, SIGTERM lets it stop everything it started."""
    cmd = [
        sys.executable,
        str(SOAK),
        "--duration",
        str(DURATION),
        "--seed",
        "7",
        "--json",
        str(results),
    ]
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=CLEANUP_TIMEOUT)
            pytest.fail(f"the soak took longer than {RUN_TIMEOUT:.0f} s:\n{output[-6000:]}")
    return proc.returncode, output


def test_soak_loses_nothing_under_faults(tmp_path: Path) -> None:
    require_services()
    results = tmp_path / "soak.json"
    code, output = run_soak(results)
    assert code == 0, output[-8000:]
    figures: dict[str, Any] = json.loads(results.read_text())
    outbox = figures["outbox"]
    assert outbox["written"] > 0
    assert outbox["missing"] == 0, outbox["missing_ids"]
    assert outbox["delivered"] == outbox["written"]
    assert figures["reloads"]["rejected"] == 0
    assert figures["reloads"]["accepted"] > 0
    assert figures["final"]["identical"], figures["final"]["diff"]
    assert figures["final"]["dhcpd_loaded_final"]
    assert set(figures["fault_kinds"]) >= FAULT_KINDS, figures["fault_counts"]
    assert figures["probes"]["seen"] == figures["probes"]["count"] > 0
    assert figures["writes"].get("committed bulk import", 0) >= 1
    assert figures["passed"], figures["checks"]
