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

# Client architectures (DHCP option 93, RFC 4578) with a boot file of their own: the
# Boot field and the option 93 values it answers. x64 UEFI firmware sends 7, some 9.
ARCHITECTURES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("file_bios", (0,)),
    ("file_uefi_x64", (7, 9)),
    ("file_uefi_arm64", (11,)),
)

# A pair row without a mode (dhcp_failover.mode NULL, migration 0009) runs in the mode
# of the kind of server it is rendered for: by output format ('--format').
DEFAULT_MODES = {"isc": "isc-failover", "kea": "kea-hot-standby"}
# The output format that can run each mode (dhcp_failover.mode's values).
MODE_FORMATS = {"isc-failover": "isc", "kea-hot-standby": "kea", "kea-load-balancing": "kea"}


@dataclass(frozen=True, kw_only=True, slots=True)
class Boot:
    """Boot options (PXE): where a booting client finds its boot loader.

    A subnet's are its own columns. A reservation's are what its host and hardware type
    set, resolved by ``generator.read`` (host over hardware type): ``file`` is the first
    level's ``boot_file``; each architecture's file is, from the first level that sets
    any boot file, its file for that architecture, else its ``boot_file``. None leaves a
    value to the next level (for a reservation: its subnet).
    """

    next_server: IPAddress | None = None
    file: str | None = None  # any architecture
    file_bios: str | None = None
    file_uefi_x64: str | None = None
    file_uefi_arm64: str | None = None

    def by_architecture(self) -> list[tuple[tuple[int, ...], str]]:
        """(option 93 values, file) for each architecture whose file differs from ``file``."""
        found = []
        for field, codes in ARCHITECTURES:
            name = getattr(self, field)
            if name is not None and name != self.file:
                found.append((codes, name))
        return found


@dataclass(frozen=True, kw_only=True, slots=True)
class Failover:
    """This server's side of its failover pair (a row of ``dhcp_failover``, read for a
    ``--server`` scope): its role, its own endpoint and its partner's, and the timers."""

    name: str  # the peer name both servers' configs use
    # 'isc-failover', 'kea-hot-standby' or 'kea-load-balancing'; None: the server's
    # default (DEFAULT_MODES). Read it through effective_mode.
    mode: str | None
    role: str  # 'primary' or 'secondary' (Kea hot-standby: the standby)
    server_name: str  # this server's dhcp_server.name (Kea: this-server-name)
    peer_name: str  # the partner's dhcp_server.name
    address: IPAddress
    port: int
    peer_address: IPAddress
    peer_port: int
    mclt: int  # seconds
    max_response_delay: int  # seconds
    max_unacked_updates: int
    load_balance_max_seconds: int  # seconds
    split: int  # of 256
    # Kea HA (milliseconds, or a count)
    heartbeat_delay_ms: int = 10000
    max_response_delay_ms: int = 60000
    max_ack_delay_ms: int = 5000
    max_unacked_clients: int = 5

    def effective_mode(self, fmt: str) -> str:
        """The mode the pair runs in on a server of format ``fmt`` ('isc' or 'kea'): the
        row's own, or, where the row leaves it NULL, that kind of server's default."""
        return DEFAULT_MODES[fmt] if self.mode is None else self.mode


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
    boot: Boot | None = None
    # The pair whose pool this is (a --server scope whose server has a partner): both
    # peers serve the same subnets, so every subnet of the scope carries the same pair.
    failover: Failover | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Interface:
    """One interface with an ``ip`` whose host is enabled: a candidate reservation."""

    id: int
    host_id: int
    hostname: str
    name: str
    mac: str  # as the database prints macaddr: 'aa:bb:cc:dd:ee:ff'
    ip: IPAddress
    boot: Boot | None = None  # what its host or hardware type sets; None: nothing


@dataclass(frozen=True, kw_only=True, slots=True)
class Inventory:
    """A consistent snapshot: everything one render needs."""

    subnets: tuple[Subnet, ...]
    interfaces: tuple[Interface, ...]
