"""Fixtures for the end-to-end tests: network namespaces, a scratch directory, MACs."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e import netns


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short scratch path (Kea's control socket must fit a unix socket address)."""
    path = Path(tempfile.mkdtemp(prefix="mdb-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def net() -> Iterator[netns.Link]:
    """Two fresh network namespaces joined by a veth pair, deleted after the test; the
    server's namespace is also reachable from the test's at ``control_ip``."""
    ok, missing = netns.available()
    require(ok, missing)
    with netns.link(control=True) as link:
        yield link


@pytest.fixture
def client(net: netns.Link, workdir: Path) -> netns.Client:
    return netns.client(net, workdir / "client")


@pytest.fixture
def need_dhcpd() -> None:
    require(netns.have_dhcpd(), "ISC dhcpd (apt-get install isc-dhcp-server)")


@pytest.fixture
def need_kea() -> None:
    require(netns.have_kea(), "Kea (apt-get install kea-dhcp4-server)")


def new_mac() -> str:
    """A locally administered unicast MAC no other run uses."""
    tail = uuid.uuid4().bytes[:5]
    return ":".join(f"{b:02x}" for b in (0x02, *tail))
