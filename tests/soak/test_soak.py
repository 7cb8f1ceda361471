"""The chaos soak, short: 60 s of writes while every service, a real dhcpd in a network
namespace included, is killed or restarted at least once must lose no change, start
dhcpd with no config it refuses, find no difference in any reconciliation, end with the
daemon's dhcpd.conf identical to a fresh render and with dhcpd serving, MAC by MAC over
OMAPI, exactly the database's reservations (bench/soak.py, docs/reliability.md)."""

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
from tests.e2e import netns

pytestmark = [
    pytest.mark.slow,
    pytest.mark.pg,
    pytest.mark.broker,
    pytest.mark.dhcpd,
    pytest.mark.netns,
]

SOAK = ROOT / "bench" / "soak.py"
DURATION = 60  # seconds of load and faults
RECONCILE_INTERVAL = 10  # seconds: several reconciliations during the load
RUN_TIMEOUT = 210.0  # seconds for the whole run: setup, load, drain, audit, teardown
CLEANUP_TIMEOUT = 60.0  # seconds the soak gets to stop its services after SIGTERM
FAULT_KINDS = {"relay", "generator", "broker", "postgres", "dhcpd"}


def require_services() -> None:
    require_postgres()
    require(have_activemq(), "ActiveMQ (apt-get install activemq)")
    require(
        syntax_check.find_binary("dhcpd") is not None, "ISC dhcpd (apt-get install isc-dhcp-server)"
    )
    ok, missing = netns.available()
    require(ok, missing)


def run_soak(results: Path) -> tuple[int, str]:
    """Run the soak; on a timeout, SIGTERM lets it stop everything it started."""
    cmd = [
        sys.executable,
        str(SOAK),
        "--duration",
        str(DURATION),
        "--seed",
        "7",
        "--reconcile-interval",
        str(RECONCILE_INTERVAL),
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
    assert figures["reconciliations"] > 0
    assert figures["reconcile_differences"] == 0
    audit = figures["omapi_audit"]
    assert audit["served_right"] == audit["reservations_in_database"] > 0, audit
    assert audit["problems"] == 0 and not audit["error"], audit
    assert audit["macs_looked_up"] > audit["reservations_in_database"]
    assert set(figures["fault_kinds"]) >= FAULT_KINDS, figures["fault_counts"]
    assert {"dhcpd kill", "dhcpd restart"} & set(figures["fault_counts"])
    assert figures["probes"]["seen"] == figures["probes"]["count"] > 0
    assert figures["writes"].get("committed bulk import", 0) >= 1
    assert figures["passed"], figures["checks"]
