"""From changed host blocks to OMAPI operations, and their order against a fake dhcpd."""

from __future__ import annotations

import ipaddress

import pytest

from generator import model, omapi, omapi_apply, render_isc


def block(hostname: str, mac: str, ip: str) -> str:
    return render_isc.host_block(
        model.Interface(
            id=1, host_id=1, hostname=hostname, name="eth0", mac=mac, ip=ipaddress.ip_address(ip)
        )
    )


A = block("web1", "02:00:00:00:00:01", "10.0.0.10")
A_MOVED = block("web1", "02:00:00:00:00:01", "10.0.0.11")
A_RENAMED = block("www1", "02:00:00:00:00:01", "10.0.0.10")
B = block("db1", "02:00:00:00:00:02", "10.0.0.20")


def test_a_block_gives_back_its_host() -> None:
    assert omapi_apply.host_of(A) == omapi.Host(
        name="web1-02-00-00-00-00-01", mac="02:00:00:00:00:01", ip="10.0.0.10", hostname="web1"
    )
    with pytest.raises(omapi.errors.UnsafeValue):
        omapi_apply.host_of("\nhost x { deny booting; }\n")


def test_diff_kinds() -> None:
    # an address change moves a host in place; a new name (or anything else) is a
    # delete and an add; a block that left and came back is no change at all
    plan = omapi_apply.diff([(A, None), (None, A_MOVED), (B, None), (None, B)])
    assert [h.ip for h in plan.moved] == ["10.0.0.11"]
    assert plan.added == plan.removed == ()
    assert [h.name for h in omapi_apply.diff([(None, B)]).added] == ["db1-02-00-00-00-00-02"]
    renamed = omapi_apply.diff([(A, A_RENAMED)])
    assert [h.name for h in renamed.removed] == ["web1-02-00-00-00-00-01"]
    assert [h.name for h in renamed.added] == ["www1-02-00-00-00-00-01"]


class FakeDhcpd:
    """Host objects by name, refusing a second host for a MAC as dhcpd does."""

    def __init__(self, hosts: list[omapi.Host]) -> None:
        self.hosts = {h.name: h for h in hosts}
        self.calls: list[str] = []

    def add(self, host: omapi.Host) -> None:
        self.calls.append(f"add {host.name}")
        if host.name in self.hosts or any(h.mac == host.mac for h in self.hosts.values()):
            raise omapi.AlreadyExists("exists")
        self.hosts[host.name] = host

    def delete(self, name: str) -> bool:
        self.calls.append(f"delete {name}")
        return self.hosts.pop(name, None) is not None

    def set_ip(self, name: str, ip: str) -> None:
        self.calls.append(f"set_ip {name}")
        if name not in self.hosts:
            raise omapi.OmapiError("no such host")
        old = self.hosts[name]
        self.hosts[name] = omapi.Host(name=name, mac=old.mac, ip=ip, hostname=old.hostname)

    def lookup_by_name(self, name: str) -> omapi.Host | None:
        return self.hosts.get(name)

    def lookup_by_mac(self, mac: str) -> omapi.Host | None:
        return next((h for h in self.hosts.values() if h.mac == mac), None)


def test_deletes_go_before_adds_so_a_mac_is_never_on_two_hosts() -> None:
    server = FakeDhcpd([omapi_apply.host_of(A)])
    omapi_apply.send(server, omapi_apply.diff([(A, A_RENAMED)]))  # type: ignore[arg-type]
    assert server.calls[:2] == ["delete web1-02-00-00-00-00-01", "add www1-02-00-00-00-00-01"]
    assert list(server.hosts) == ["www1-02-00-00-00-00-01"]


def test_already_exists_is_checked_not_trusted() -> None:
    # a stale host under another name holds the MAC (e.g. left by a crash): replaced
    stale = omapi.Host(name="old-name", mac="02:00:00:00:00:01", ip="10.0.0.99")
    server = FakeDhcpd([stale])
    omapi_apply.send(server, omapi_apply.diff([(None, A)]))  # type: ignore[arg-type]
    assert server.hosts == {"web1-02-00-00-00-00-01": omapi_apply.host_of(A)}
    # the very host is there already (an answer lost before): nothing to change
    again = FakeDhcpd([omapi_apply.host_of(A)])
    omapi_apply.send(again, omapi_apply.diff([(None, A)]))  # type: ignore[arg-type]
    assert again.calls == ["add web1-02-00-00-00-00-01"]


def test_a_moved_host_dhcpd_lost_is_added_whole() -> None:
    server = FakeDhcpd([])
    omapi_apply.send(server, omapi_apply.diff([(A, A_MOVED)]))  # type: ignore[arg-type]
    assert server.hosts["web1-02-00-00-00-00-01"].ip == "10.0.0.11"


def test_what_dhcpd_does_not_show_afterwards_is_a_mismatch() -> None:
    class Forgetful(FakeDhcpd):
        def add(self, host: omapi.Host) -> None:
            self.calls.append(f"add {host.name}")  # says yes, keeps nothing

    with pytest.raises(omapi_apply.Mismatch) as caught:
        omapi_apply.send(Forgetful([]), omapi_apply.diff([(None, B)]))  # type: ignore[arg-type]
    assert caught.value.problems == [
        "MAC 02:00:00:00:00:02: expected db1-02-00-00-00-00-02 at 10.0.0.20, dhcpd has nothing"
    ]


def boot_block(boot: model.Boot | None, ip: str = "10.0.0.10") -> str:
    return render_isc.host_block(
        model.Interface(
            id=1,
            host_id=1,
            hostname="web1",
            name="eth0",
            mac="02:00:00:00:00:01",
            ip=ipaddress.ip_address(ip),
            boot=boot,
        )
    )


UEFI = model.Boot(next_server=ipaddress.IPv4Address("10.0.0.5"), file_uefi_x64="grubx64.efi")
EVERYTHING = model.Boot(
    next_server=ipaddress.IPv4Address("10.0.0.6"),
    file="pxelinux.0",
    file_bios="bios.0",
    file_uefi_x64="grubx64.efi",
    file_uefi_arm64="{grub};aa64.efi",
)


def test_a_block_with_boot_options_gives_them_as_statements() -> None:
    host = omapi_apply.host_of(boot_block(UEFI))
    assert host.statements == (
        "next-server 10.0.0.5; if option arch = 00:07 or option arch = 00:09 {"
        ' filename "grubx64.efi"; }'
    )
    assert (host.name, host.mac, host.ip, host.hostname) == (
        "web1-02-00-00-00-00-01",
        "02:00:00:00:00:01",
        "10.0.0.10",
        "web1",
    )
    assert omapi_apply.host_of(boot_block(EVERYTHING)).statements == (
        'next-server 10.0.0.6; filename "pxelinux.0";'
        ' if option arch = 00:00 { filename "bios.0"; }'
        ' if option arch = 00:07 or option arch = 00:09 { filename "grubx64.efi"; }'
        ' if option arch = 00:0b { filename "{grub};aa64.efi"; }'
    )
    assert omapi_apply.host_of(boot_block(None)).statements is None


@pytest.mark.parametrize(
    "extra",
    [
        "  deny booting;\n",
        '  filename "a"; deny booting;\n',
        "  if option arch = 00:07 {\n    deny booting;\n  }\n",
        '  next-server 10.0.0.5; filename "x";\n',
        '  filename "a\\"b";\n',
    ],
)
def test_only_rendered_boot_statements_are_taken(extra: str) -> None:
    text = boot_block(None).replace("}\n", extra + "}\n")
    with pytest.raises(omapi.errors.UnsafeValue):
        omapi_apply.host_of(text)


def test_a_boot_option_change_is_a_delete_and_an_add() -> None:
    old, new = boot_block(None), boot_block(UEFI)
    plan = omapi_apply.diff([(old, new)])
    assert [h.statements for h in plan.removed] == [None]
    assert [h.statements for h in plan.added] == [omapi_apply.host_of(new).statements]
    assert plan.moved == ()
    # a new address with the same options still moves in place
    moved = omapi_apply.diff([(new, None), (None, boot_block(UEFI, "10.0.0.11"))])
    assert [h.ip for h in moved.moved] == ["10.0.0.11"] and moved.added == ()
    server = FakeDhcpd([omapi_apply.host_of(old)])
    omapi_apply.send(server, plan)  # type: ignore[arg-type]
    assert server.calls[:2] == ["delete web1-02-00-00-00-00-01", "add web1-02-00-00-00-00-01"]
    assert server.hosts["web1-02-00-00-00-00-01"].statements == plan.added[0].statements
