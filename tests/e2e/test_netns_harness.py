"""The DHCP harness on its own, with hand-written configs: a real client in one network
namespace gets its fixed address from a real ISC dhcpd or Kea in another, sees a changed
config after a reload, and falls back to the pool when its reservation is gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e import configs, netns
from tests.e2e.conftest import new_mac

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd]


def test_isc_fixed_address_reload_and_pool(
    net: netns.Link, workdir: Path, client: netns.Client, need_dhcpd: None
) -> None:
    mac = new_mac()
    conf = workdir / "dhcpd.conf"
    conf.write_text(configs.isc(net, {mac: 20}))
    with netns.isc_dhcpd(net, conf, workdir) as server:
        assert server.running()
        assert client.request(mac) == str(net.host(20))

        conf.write_text(configs.isc(net, {mac: 21}))
        server.reload()
        assert client.request() == str(net.host(21))

        conf.write_text(configs.isc(net, {}))
        server.reload()
        assert configs.in_pool(net, client.request())

        server.stop()
        assert not server.running()
    assert client.request() is None


def test_isc_reload_command_fails_on_a_bad_config(
    net: netns.Link, workdir: Path, need_dhcpd: None
) -> None:
    conf = workdir / "dhcpd.conf"
    conf.write_text(configs.isc(net, {}))
    with netns.isc_dhcpd(net, conf, workdir) as server:
        conf.write_text("subnet {\n")
        with pytest.raises(netns.HarnessError, match="dhcpd did not start"):
            server.reload()


def test_kea_fixed_address_config_reload_and_pool(
    net: netns.Link, workdir: Path, client: netns.Client, need_kea: None
) -> None:
    mac = new_mac()
    conf = netns.kea_paths(workdir)["conf"]
    conf.write_text(configs.kea(net, workdir, {mac: 20}))
    with netns.kea_dhcp4(net, workdir) as server:
        assert client.request(mac) == str(net.host(20))

        conf.write_text(configs.kea(net, workdir, {mac: 21}))
        server.reload()
        assert client.request() == str(net.host(21))

        conf.write_text(configs.kea(net, workdir, {}))
        server.reload()
        assert configs.in_pool(net, client.request())


def test_namespaces_are_gone_after_the_block(workdir: Path, need_dhcpd: None) -> None:
    require(*netns.available())
    with pytest.raises(RuntimeError, match="boom"), netns.link() as net:
        conf = workdir / "dhcpd.conf"
        conf.write_text(configs.isc(net, {}))
        with netns.isc_dhcpd(net, conf, workdir) as server:
            pid = server.pid()
            raise RuntimeError("boom")
    listed = netns._ip("netns", "list").stdout
    assert net.server_ns not in listed
    assert net.client_ns not in listed
    assert not Path(f"/proc/{pid}").exists()
