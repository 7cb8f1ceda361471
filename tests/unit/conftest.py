"""Helpers for the unit tests: the real checkers (skipped if absent) and golden files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from generator import render, syntax_check

GOLDEN_DIR = Path(__file__).parent / "golden"
# UPDATE_GOLDEN=1 rewrites the golden files instead of comparing; review the diff.
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

Checker = Callable[[str], syntax_check.CheckResult]
Golden = Callable[[str, str], None]


def require_binary(name: str) -> str:
    """Path of ``name``; skip the test if it is missing, fail instead under CI=true."""
    path = syntax_check.find_binary(name)
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed, and CI=true requires it")
        pytest.skip(f"{name} is not installed")
    return path


def _checker(fmt: render.Format) -> Checker:
    require_binary(syntax_check.CHECKERS[fmt])

    def check(text: str) -> syntax_check.CheckResult:
        with tempfile.TemporaryDirectory(prefix="unit-check-") as directory:
            path = Path(directory) / ("candidate.conf" if fmt == "isc" else "candidate.json")
            path.write_text(text, encoding="utf-8")
            return syntax_check.check(path, fmt=fmt)

    return check


# Session scope, so hypothesis tests can use them (no per-example fixture state).
@pytest.fixture(scope="session")
def dhcpd_check() -> Checker:
    """Run ``dhcpd -t`` on a text; ConfigRejected if dhcpd refuses it."""
    return _checker("isc")


@pytest.fixture(scope="session")
def kea_check() -> Checker:
    """Run ``kea-dhcp4 -t`` on a text; ConfigRejected if Kea refuses it."""
    return _checker("kea")


def assert_golden(name: str, text: str) -> None:
    """Compare ``text`` with golden/``name`` (or rewrite it under UPDATE_GOLDEN=1)."""
    path = GOLDEN_DIR / name
    if UPDATE_GOLDEN:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; see UPDATE_GOLDEN"


@pytest.fixture
def golden() -> Golden:
    """``golden(name, text)``: assert ``text`` equals the golden file ``name``."""
    return assert_golden
