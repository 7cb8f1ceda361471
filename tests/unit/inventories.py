"""Builders for inventories in tests, and the sample behind the golden files."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from generator import model

HOSTILE = 'x"; }\nhost evil { hardware ethernet 02:00:00:00:00:99; fixed-address 10.0.0.9; }'


def _address(text: str | None) -> model.IPAddress | None:
    return None if text is None else ipaddress.ip_address(text)


def subnet(
    id: int,
    network: str,
    *,
    name: str | None = None,
    gateway: str | None = None,
    domain_name: str | None = None,
    dns_servers: Iterable[str] = (),
    pool: tuple[str | None, str | None] = (None, None),
    lease_time: int | None = None,
    boot: model.Boot | None = None,
) -> model.Subnet:
    return model.Subnet(
        id=id,
        name=f"net{id}" if name is None else name,
        network=ipaddress.ip_network(network),
        gateway=_address(gateway),
        domain_name=domain_name,
        dns_servers=tuple(ipaddress.ip_address(server) for server in dns_servers),
        pool_start=_address(pool[0]),
        pool_end=_address(pool[1]),
        lease_time=lease_time,
        boot=boot,
    )


def interface(
    id: int,
    hostname: str,
    mac: str,
    ip: str,
    *,
    name: str = "eth0",
    host_id: int = 0,
    boot: model.Boot | None = None,
) -> model.Interface:
    return model.Interface(
        id=id,
        host_id=host_id or id,
        hostname=hostname,
        name=name,
        mac=mac,
        ip=ipaddress.ip_address(ip),
        boot=boot,
    )


def sample() -> model.Inventory:
    """Several subnets, pools, multi-interface hosts, and bad rows of many kinds.

    Kept: subnets 1, 2, 3, 8 and interfaces 1-5, 18, 21 (see test_validate).
    """
    subnets = (
        subnet(1, "10.0.0.0/24", name="lan", gateway="10.0.0.1", domain_name="example.com",
               dns_servers=("10.0.0.2", "10.0.0.3"), pool=("10.0.0.100", "10.0.0.200"),
               lease_time=600),
        subnet(2, "10.0.1.0/24", name="servers", gateway="10.0.1.1",
               domain_name="srv.example.com", dns_servers=("10.0.0.2",)),
        subnet(3, "192.168.50.0/26", name="mgmt", pool=("192.168.50.10", "192.168.50.20"),
               lease_time=86400),
        subnet(4, "10.0.0.128/25", name="overlaps-lan"),
        subnet(5, "2001:db8::/64", name="v6"),
        subnet(6, "172.16.0.0/24", name="reversed-pool", pool=("172.16.0.50", "172.16.0.10")),
        subnet(7, "172.16.1.0/24", name="foreign-gateway", gateway="172.16.2.1"),
        subnet(8, "172.16.3.0/24", name=HOSTILE, domain_name=HOSTILE,
               dns_servers=("172.16.3.2", "2001:db8::53"), lease_time=0),
        subnet(9, "172.16.4.0/24", name="pool-past-end", pool=("172.16.4.250", "172.16.5.10")),
        subnet(10, "172.16.6.0/24", name="half-pool", pool=("172.16.6.10", None)),
    )  # fmt: skip
    interfaces = (
        interface(1, "web1", "02:00:00:00:00:01", "10.0.0.10", host_id=1),
        interface(2, "web1", "02:00:00:00:00:02", "10.0.1.10", name="eth1", host_id=1),
        interface(3, "web1", "02:00:00:00:00:03", "192.168.50.30", name="ipmi", host_id=1),
        interface(4, "db1", "02:00:00:00:00:04", "10.0.1.20"),
        interface(5, "DB2.Example.com", "02-00-00-00-00-05", "10.0.1.21"),
        interface(6, "copy-mac", "02:00:00:00:00:01", "10.0.1.30"),
        interface(7, "copy-ip", "02:00:00:00:00:07", "10.0.1.20"),
        interface(8, "at-network", "02:00:00:00:00:08", "10.0.0.0"),
        interface(9, "at-broadcast", "02:00:00:00:00:09", "10.0.0.255"),
        interface(10, "in-pool", "02:00:00:00:00:0a", "10.0.0.150"),
        interface(11, "nowhere", "02:00:00:00:00:0b", "10.9.9.9"),
        interface(12, "in-skipped-subnet", "02:00:00:00:00:0c", "172.16.0.5"),
        interface(13, HOSTILE, "02:00:00:00:00:0d", "10.0.1.40"),
        interface(14, "a" * 64, "02:00:00:00:00:0e", "10.0.1.41"),
        interface(15, "bad-ifname", "02:00:00:00:00:0f", "10.0.1.42", name="eth0; deny"),
        interface(16, "short-mac", "02:00:00:00:10", "10.0.1.43"),
        interface(17, "v6-host", "02:00:00:00:00:11", "2001:db8::10"),
        interface(18, "in-odd-subnet", "02:00:00:00:00:12", "172.16.3.5"),
        interface(19, "under_score", "02:00:00:00:00:13", "10.0.1.44"),
        interface(20, "café", "02:00:00:00:00:14", "10.0.1.45"),
        interface(21, "gw1", "02:00:00:00:00:15", "10.0.1.1", host_id=21),
        interface(22, "multicast", "03:00:00:00:00:16", "10.0.1.46"),
    )  # fmt: skip
    # Reversed on purpose: the result must not depend on the order rows arrive in.
    return model.Inventory(subnets=subnets[::-1], interfaces=interfaces[::-1])


def boot(
    next_server: str | None = None,
    file: str | None = None,
    *,
    bios: str | None = None,
    uefi_x64: str | None = None,
    uefi_arm64: str | None = None,
) -> model.Boot:
    return model.Boot(
        next_server=_address(next_server),
        file=file,
        file_bios=bios,
        file_uefi_x64=uefi_x64,
        file_uefi_arm64=uefi_arm64,
    )


def boot_sample() -> model.Inventory:
    """Boot options at every level, as ``generator.read`` resolves them for reservations
    (host over hardware type; an architecture's file, else the level's boot file).

    Subnet 1 sets everything, subnet 2 only a boot file, subnet 3 nothing; the
    reservations set nothing, a next server only, a file only, one architecture's file
    only, a file and an architecture's file, or every architecture the same file.
    """
    subnets = (
        subnet(1, "10.0.0.0/24", name="pxe", pool=("10.0.0.100", "10.0.0.200"),
               boot=boot("10.0.0.5", "pxelinux.0", bios="bios/pxelinux.0",
                         uefi_x64="grubx64.efi", uefi_arm64="grubaa64.efi")),
        subnet(2, "10.0.1.0/24", name="file-only", boot=boot(file="undionly.kpxe")),
        subnet(3, "10.0.2.0/24", name="no-boot"),
    )  # fmt: skip
    interfaces = (
        interface(1, "inherits", "02:00:00:00:01:01", "10.0.0.10"),
        interface(2, "own-server", "02:00:00:00:01:02", "10.0.0.11", boot=boot("10.0.0.6")),
        interface(3, "own-file", "02:00:00:00:01:03", "10.0.0.12",
                  boot=boot(file="install.efi", bios="install.efi", uefi_x64="install.efi",
                            uefi_arm64="install.efi")),
        interface(4, "uefi-only", "02:00:00:00:01:04", "10.0.0.13",
                  boot=boot(uefi_x64="r640/grubx64.efi")),
        interface(5, "file-and-arm", "02:00:00:00:01:05", "10.0.1.10",
                  boot=boot("10.0.1.7", "ipxe.efi", bios="ipxe.efi", uefi_x64="ipxe.efi",
                            uefi_arm64="arm/ipxe.efi")),
        interface(6, "no-subnet-boot", "02:00:00:00:01:06", "10.0.2.10",
                  boot=boot("10.0.2.5", "pxelinux.0", bios="pxelinux.0",
                            uefi_x64="grubx64.efi", uefi_arm64="pxelinux.0")),
        interface(7, "plain", "02:00:00:00:01:07", "10.0.2.11"),
    )  # fmt: skip
    return model.Inventory(subnets=subnets, interfaces=interfaces)
