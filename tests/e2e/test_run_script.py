"""The README's run command brings the pipeline up, a change reaches the file, and a
second run over the same state neither fails nor duplicates the sample inventory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, require, services

pytestmark = pytest.mark.slow


def test_run_smoke_twice_over_the_same_state() -> None:
    require((services.ACTIVEMQ_HOME / "bin" / "activemq.jar").exists(), "ActiveMQ")
    state = Path(tempfile.mkdtemp(prefix="machinedb-run-"))
    try:
        for _ in range(2):
            result = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "run.py"), "--smoke", "--dir", str(state)],
                capture_output=True, text=True, timeout=240, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
            assert "smoke test:" in result.stderr and "reached" in result.stderr
        text = (state / "dhcpd.conf").read_text()
        assert text.count("\nhost ") == 9  # the sample's nine reservations, once each
    finally:
        services.PostgresCluster(state / "pg").stop("immediate")
        services.ActiveMQBroker(state / "activemq").stop(kill=True)
        shutil.rmtree(state, ignore_errors=True)
