"""The pipeline's choice between OMAPI and a restart, with a fake dhcpd and real files.

The state, the apply and the checks are real; the database is not needed (the state is
built from rows here) and dhcpd's OMAPI is ``FakeDhcpd`` from ``test_omapi_apply``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from generator import metrics, model, omapi, omapi_apply, passes, render_options, settings, state
from tests.unit import inventories
from tests.unit.test_apply import recorder, reloads
from tests.unit.test_omapi_apply import FakeDhcpd

SUBNET = inventories.subnet(1, "10.0.0.0/24", pool=("10.0.0.200", "10.0.0.250"))


def row(n: int, ip: str | None = None) -> model.Interface:
    return model.Interface(
        id=n,
        host_id=n,
        hostname=f"h{n}",
        name="eth0",
        mac=f"02:00:00:00:00:{n:02x}",
        ip=ipaddress.ip_address(ip or f"10.0.0.{n}"),
    )


class Lab:
    def __init__(self, tmp_path: Path, hosts: int, **overrides: Any) -> None:
        self.reload_command, self.reload_log = recorder(tmp_path)
        self.config = settings.ApplySettings(
            fmt="isc",
            output=tmp_path / "dhcpd.conf",
            syntax_check=False,
            reload_command=self.reload_command,
            options=render_options.RenderOptions(**overrides),
        )
        self.metrics = metrics.Metrics()
        self.dhcpd = FakeDhcpd([])
        self.pipeline = passes.Pipeline(
            None,  # type: ignore[arg-type]  # no database: the state is built below
            config=self.config,
            metrics=self.metrics,
            hosts=self.dhcpd,  # type: ignore[arg-type]
            restart_settle=0.3,
        )
        self.rows = {n: row(n) for n in range(1, hosts + 1)}
        self.pipeline.state = self.build()
        assert self.pipeline._apply(self.pipeline.state)  # the start: file written, loaded
        self.dhcpd.hosts = {
            h.name: h
            for h in (omapi_apply.host_of(b) for b in self.pipeline.document().parts.hosts)  # type: ignore[union-attr]
        }
        self.dhcpd.calls.clear()

    def build(self) -> state.State[Any]:
        inventory = model.Inventory(subnets=(SUBNET,), interfaces=tuple(self.rows.values()))
        return state.State.build(inventory, make=passes.render_isc.host_block)

    def change(self, written: list[model.Interface], gone: list[int]) -> bool:
        current = self.pipeline.state
        assert current is not None
        for r in written:
            self.rows[r.id] = r
        for id_ in gone:
            self.rows.pop(id_)
        current.update(written, gone)
        return self.pipeline._apply(current)

    def applies(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "dhcp_generator_applies_total", {"kind": kind}
        )
        return value or 0.0

    def sample(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0


def test_host_changes_go_over_omapi_and_the_file_follows_without_a_restart(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path, hosts=3)
    assert len(reloads(lab.reload_log)) == 1  # the first file
    assert lab.change([row(2, "10.0.0.102"), row(4)], [3])
    assert lab.dhcpd.calls == [
        "delete h3-02-00-00-00-00-03",
        "set_ip h2-02-00-00-00-00-02",
        "add h4-02-00-00-00-00-04",
    ]
    assert sorted(h.ip for h in lab.dhcpd.hosts.values()) == ["10.0.0.1", "10.0.0.102", "10.0.0.4"]
    assert "fixed-address 10.0.0.102;" in lab.config.output.read_text()
    assert len(reloads(lab.reload_log)) == 1  # no restart
    assert lab.applies("omapi") == 1


def test_a_wipe_is_refused_before_any_host_reaches_dhcpd(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=30)
    before = lab.config.output.read_text()
    assert not lab.change([], list(range(1, 31)))
    assert lab.dhcpd.calls == []
    assert len(lab.dhcpd.hosts) == 30
    assert lab.config.output.read_text() == before
    refused = lab.metrics.registry.get_sample_value(
        "dhcp_generator_renders_total", {"result": "refused"}
    )
    assert refused == 1


def test_omapi_failure_falls_back_to_a_restart(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=3)

    def down(host: omapi.Host) -> None:
        raise omapi.Unreachable("OMAPI 127.0.0.1:7911: cannot connect: refused")

    lab.dhcpd.add = down  # type: ignore[method-assign]
    assert lab.change([row(5)], [])
    assert "fixed-address 10.0.0.5;" in lab.config.output.read_text()
    assert len(reloads(lab.reload_log)) == 2  # restarted instead
    assert lab.sample("dhcp_generator_omapi_fallbacks_total") == 1
    assert lab.applies("restart") == 2 and lab.applies("omapi") == 0


def test_a_host_dhcpd_shows_otherwise_is_a_mismatch_and_a_restart(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=3)
    real_add = lab.dhcpd.add

    def wrong_address(host: omapi.Host) -> None:
        real_add(omapi.Host(name=host.name, mac=host.mac, ip="10.0.0.99", hostname=host.hostname))

    lab.dhcpd.add = wrong_address  # type: ignore[method-assign]
    assert lab.change([row(6)], [])
    assert lab.sample("dhcp_generator_omapi_mismatches_total") == 1
    assert lab.sample("dhcp_generator_omapi_fallbacks_total") == 1
    assert len(reloads(lab.reload_log)) == 2


@pytest.mark.parametrize("hosts", [3])
def test_a_subnet_change_restarts_and_still_sends_the_hosts(tmp_path: Path, hosts: int) -> None:
    lab = Lab(tmp_path, hosts=hosts)
    global SUBNET
    original = SUBNET
    try:
        SUBNET = inventories.subnet(1, "10.0.0.0/24", pool=("10.0.0.200", "10.0.0.240"))
        lab.rows[7] = row(7)
        fresh = lab.build()
        previous = lab.pipeline.state
        assert previous is not None
        fresh.inherit_changes(previous)
        lab.pipeline.state = fresh
        assert lab.pipeline._apply(fresh)
    finally:
        SUBNET = original
    assert "range 10.0.0.200 10.0.0.240;" in lab.config.output.read_text()
    assert len(reloads(lab.reload_log)) == 2  # the restart
    assert "h7-02-00-00-00-00-07" in lab.dhcpd.hosts  # sent before, checked after
