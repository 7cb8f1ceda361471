"""Value objects for what a render reads from the machine database.

They hold the values as the database returned them, before any semantic checks:
legacy rows may predate a constraint, so nothing here is assumed valid.
``generator.validate`` decides what is fit to render.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, kw_only=True, slots=True)
class Subnet:
    """One row of ``subnet`` with ``dhcp_enabled`` true."""

    id: int
    name: str
    network: IPNetwork
    gateway: IPAddress | None
    domain_name: str | None
    dns_servers: tuple[IPAddress, ...]
    pool_start: IPAddress | None
    pool_end: IPAddress | None
    lease_time: int | None  # seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class Interface:
    """One interface with an ``ip`` whose host is enabled: a candidate reservation."""

    id: int
    host_id: int
    hostname: str
    name: str
    mac: str  # as the database prints macaddr: 'aa:bb:cc:dd:ee:ff'
    ip: IPAddress


@dataclass(frozen=True, kw_only=True, slots=True)
class Inventory:
    """A consistent snapshot: everything one render needs."""

    subnets: tuple[Subnet, ...]
    interfaces: tuple[Interface, ...]
