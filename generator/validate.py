"""Semantic checks that ``dhcpd -t`` does not make, applied before every render.

The database enforces the same rules; these catch legacy rows and act as defence in
depth. A bad row is skipped (a bad text option only drops that option) and named in
a ``Problem``, and the rest is rendered: one broken host must not stop the others.
Everything is processed in id order, so the outcome never depends on row order.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
import json
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass

from generator import model

# Kea reserves subnet id 0 ("assign one") and 2**32 - 1; both servers need 32 bits.
SUBNET_ID_RANGE = range(1, 2**32 - 1)
# Lease times are 32-bit in both servers; ISC reads them signed.
LEASE_TIME_RANGE = range(1, 2**31)  # seconds
MAX_NAME_LENGTH = 253  # characters, RFC 1123 host and domain names
SHOWN_TEXT_LENGTH = 64  # characters of a bad value quoted in a message
# The BOOTP 'file' field holds 128 octets, NUL-terminated: Kea refuses more than 127.
MAX_BOOT_FILE_LENGTH = 127  # characters (migration 0007)

# Both cases spelled out: without IGNORECASE, dotted names match in half the time.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_RFC1123_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)
_MAC = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}", re.ASCII | re.IGNORECASE)
# How PostgreSQL prints macaddr: matching it first spares the general pattern and a copy.
_CANONICAL_MAC = re.compile(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}", re.ASCII)
_INTERFACE_NAME = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,31}", re.ASCII | re.IGNORECASE)
# Printable ASCII without space, '"', "'" or backslash: machinedb.is_boot_file_name.
_BOOT_FILE = re.compile(rf"[!#-&(-\[\]-~]{{1,{MAX_BOOT_FILE_LENGTH}}}", re.ASCII)
_NOT_NEXT_SERVER = (ipaddress.IPv4Network("0.0.0.0/32"), ipaddress.IPv4Network("224.0.0.0/3"))
_BOOT_FILE_FIELDS = ("file", *(field for field, _ in model.ARCHITECTURES))


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One row (or one option of a row) left out of the render, and why.

    ``kind`` is a stable rule code (``"interface_mac_key"``) for counting and tests;
    ``row`` names the row; ``message`` is the full single-line, ASCII-only text.
    """

    kind: str
    row: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Checked:
    """The inventory fit to render, and the problems met on the way."""

    inventory: model.Inventory
    problems: tuple[Problem, ...]


def is_rfc1123_name(text: str) -> bool:
    """Letters, digits and inner hyphens, 1-63 per dot-separated label, 253 at most."""
    return len(text) <= MAX_NAME_LENGTH and _RFC1123_NAME.fullmatch(text) is not None


def canonical_mac(text: str) -> str | None:
    """Six octets as lower-case ``aa:bb:cc:dd:ee:ff``, or None if ``text`` is not one."""
    if _CANONICAL_MAC.fullmatch(text) is not None:
        return text
    if _MAC.fullmatch(text) is None:
        return None
    return text.lower().replace("-", ":")


def is_unicast_mac(mac: str) -> bool:
    """A canonical MAC a NIC can own: not all-zero, and the group (multicast) bit clear."""
    return mac != "00:00:00:00:00:00" and int(mac[:2], 16) & 1 == 0


@functools.lru_cache(maxsize=1024)  # a few names ("eth0") cover most rows
def is_interface_name(text: str) -> bool:
    """A name that is harmless in any config or log line (``eth0``, ``bond0.12``)."""
    return _INTERFACE_NAME.fullmatch(text) is not None


def is_boot_file_name(text: str) -> bool:
    """1-127 printable ASCII characters, none of them a space, quote or backslash."""
    return _BOOT_FILE.fullmatch(text) is not None


def is_next_server(address: model.IPAddress) -> bool:
    """One IPv4 unicast address: not 0.0.0.0, multicast or broadcast."""
    return isinstance(address, ipaddress.IPv4Address) and not any(
        address in network for network in _NOT_NEXT_SERVER
    )


def clean_boot(
    boot: model.Boot | None, row: str, problems: list[Problem], rule: str
) -> model.Boot | None:
    """``boot`` without the values that are not safe (each added to ``problems``)."""
    if boot is None:
        return None
    changes: dict[str, object] = {}
    if boot.next_server is not None and not is_next_server(boot.next_server):
        detail = f"next_server {boot.next_server} is not an IPv4 unicast address; option dropped"
        problems.append(_problem(f"{rule}_next_server_ipv4", row, detail))
        changes["next_server"] = None
    for field in _BOOT_FILE_FIELDS:
        name = getattr(boot, field)
        if name is not None and not is_boot_file_name(name):
            column = "boot_" + field
            detail = f"{column} {_show(name)} is not a safe boot file name; option dropped"
            problems.append(_problem(f"{rule}_boot_file_name", row, detail))
            changes[field] = None
    if not changes:
        return boot
    cleaned = dataclasses.replace(boot, **changes)  # type: ignore[arg-type]
    return None if cleaned == model.Boot() else cleaned


def clean_interface_boot(interface: model.Interface, problems: list[Problem]) -> model.Interface:
    """``interface`` without the boot options that are not safe (legacy rows of its host
    or hardware type); the reservation itself stays."""
    if interface.boot is None:
        return interface
    boot = clean_boot(interface.boot, _interface_label(interface), problems, "host")
    return interface if boot is interface.boot else dataclasses.replace(interface, boot=boot)


def check(inventory: model.Inventory) -> Checked:
    """Split ``inventory`` into what is fit to render and the problems found."""
    problems: list[Problem] = []
    subnets = check_subnets(inventory.subnets, problems)
    interfaces = _check_interfaces(inventory.interfaces, subnets, problems)
    clean = model.Inventory(subnets=subnets, interfaces=interfaces)
    return Checked(inventory=clean, problems=tuple(problems))


def check_subnets(
    rows: Iterable[model.Subnet], problems: list[Problem]
) -> tuple[model.Subnet, ...]:
    """The subnets fit to render, in id order; each one left out is added to ``problems``."""
    kept: list[model.Subnet] = []
    index = SubnetIndex()
    for subnet in sorted(rows, key=lambda row: row.id):
        row = _subnet_label(subnet)
        fault = _subnet_fault(subnet) or _overlap_fault(subnet, index)
        if fault is not None:
            problems.append(_problem(fault[0], row, fault[1]))
            continue
        index.add(subnet)
        kept.append(_clean_subnet_options(subnet, row, problems))
    return tuple(kept)


def _subnet_fault(subnet: model.Subnet) -> tuple[str, str] | None:
    """The first rule that makes the whole subnet unusable, as (kind, detail)."""
    network = subnet.network
    if not isinstance(network, ipaddress.IPv4Network):
        return "subnet_network_ipv4", f"network {network} is not IPv4"
    if subnet.id not in SUBNET_ID_RANGE:
        bounds = f"{SUBNET_ID_RANGE.start}..{SUBNET_ID_RANGE.stop - 1}"
        return "subnet_id_range", f"id is outside {bounds}"
    if subnet.gateway is not None and not _is_host_address(subnet.gateway, network):
        return "subnet_gateway_inside", f"gateway {subnet.gateway} is not a host address of it"
    return _pool_fault(subnet.pool_start, subnet.pool_end, network)


def _pool_fault(
    start: model.IPAddress | None, end: model.IPAddress | None, network: ipaddress.IPv4Network
) -> tuple[str, str] | None:
    if start is None and end is None:
        return None
    if start is None or end is None:
        return "subnet_pool_complete", "pool has only one of pool_start and pool_end"
    for address in (start, end):
        if not _is_host_address(address, network):
            return "subnet_pool_inside", f"pool address {address} is not a host address of it"
    if int(start) > int(end):
        return "subnet_pool_order", f"pool_start {start} is after pool_end {end}"
    return None


def _overlap_fault(subnet: model.Subnet, index: SubnetIndex) -> tuple[str, str] | None:
    other = index.overlapping(subnet.network)
    if other is not None:
        return "subnet_no_overlap", f"it overlaps {_subnet_label(other)}, which is kept"
    return None


def _clean_subnet_options(subnet: model.Subnet, row: str, problems: list[Problem]) -> model.Subnet:
    """Drop the options that are bad on their own; the subnet still serves hosts."""
    domain_name = subnet.domain_name or None  # '' in legacy rows means "none"
    if domain_name is not None and not is_rfc1123_name(domain_name):
        detail = f"domain_name {_show(domain_name)} is not an RFC 1123 name; option dropped"
        problems.append(_problem("subnet_domain_name_rfc1123", row, detail))
        domain_name = None
    dns_servers = []
    for server in subnet.dns_servers:
        if isinstance(server, ipaddress.IPv4Address):
            dns_servers.append(server)
        else:
            detail = f"dns server {server} is not IPv4; server dropped"
            problems.append(_problem("subnet_dns_servers_addresses", row, detail))
    lease_time = subnet.lease_time
    if lease_time is not None and lease_time not in LEASE_TIME_RANGE:
        bounds = f"1..{LEASE_TIME_RANGE.stop - 1} s"
        detail = f"lease_time {lease_time} is outside {bounds}; option dropped"
        problems.append(_problem("subnet_lease_time_positive", row, detail))
        lease_time = None
    boot = clean_boot(subnet.boot, row, problems, "subnet")
    return dataclasses.replace(
        subnet,
        domain_name=domain_name,
        dns_servers=tuple(dns_servers),
        lease_time=lease_time,
        boot=boot,
    )


def _check_interfaces(
    rows: Iterable[model.Interface],
    subnets: tuple[model.Subnet, ...],
    problems: list[Problem],
) -> tuple[model.Interface, ...]:
    finder = SubnetIndex(subnets)

    by_mac: dict[str, int] = {}
    by_ip: dict[int, int] = {}  # int keys: hashing an IPv4Address is ~10x slower
    kept: list[model.Interface] = []
    ordered = sorted(rows, key=_by_id)
    # Lazily: a list of 100,000 results would only add to the peak.
    own = (own_check_of(interface, finder) for interface in ordered)
    for row, (own_fault, mac, address) in zip(ordered, own, strict=True):
        # Unsafe boot options of a row that is otherwise fine are dropped, not the row.
        interface = row if own_fault is not None else clean_interface_boot(row, problems)
        # Duplicates are judged among otherwise good rows, so a broken row never
        # keeps a good one out. The lowest id wins.
        fault = own_fault or _duplicate_fault(mac, address, by_mac, by_ip)
        if fault is not None:
            problems.append(_problem(fault[0], _interface_label(interface), fault[1]))
            continue
        by_mac[mac] = by_ip[address] = interface.id
        # Most rows hold the canonical form already: copy only the others.
        kept.append(interface if mac == interface.mac else dataclasses.replace(interface, mac=mac))
    return tuple(kept)


_by_id = operator.attrgetter("id")


Fault = tuple[str, str] | None  # (rule, detail) of a row validation leaves out
OwnCheck = tuple[Fault, str, int]  # a row's own fault, its canonical mac, its address


def own_check_of(interface: model.Interface, finder: SubnetIndex) -> OwnCheck:
    """A row's own fault (every rule but the duplicate checks), its canonical MAC ('' if
    it has none) and its address as an integer."""
    mac = canonical_mac(interface.mac) or ""
    address = int(interface.ip)
    return _interface_fault(interface, mac, address, finder), mac, address


def interface_problem(interface: model.Interface, fault: tuple[str, str]) -> Problem:
    """The problem that leaves ``interface`` out for ``fault`` (rule, detail)."""
    return _problem(fault[0], _interface_label(interface), fault[1])


def duplicate_detail(key: str, kept_id: int) -> tuple[str, str]:
    """The fault of a row whose MAC (``key`` "mac") or address ("ip") a kept row holds."""
    return f"interface_{key}_key", f"{key} is also on interface {kept_id}, which is kept"


def _interface_fault(
    interface: model.Interface, mac: str, address: int, finder: SubnetIndex
) -> tuple[str, str] | None:
    ip = interface.ip
    if not isinstance(ip, ipaddress.IPv4Address):
        return "interface_ip_address", f"ip {ip} is not IPv4"
    if not is_rfc1123_name(interface.hostname):
        return "host_hostname_rfc1123", "host name is not an RFC 1123 name"
    if not is_interface_name(interface.name):
        return "interface_name_safe", "interface name is not 1-32 of [A-Za-z0-9_.:-]"
    if not mac:
        return "interface_mac_format", "mac is not 6 octets"
    if not is_unicast_mac(mac):
        return "interface_mac_unicast", "mac is not a unicast hardware address"
    return _placement_fault(ip, address, finder.span(address))


def _placement_fault(
    ip: ipaddress.IPv4Address, address: int, span: Span | None
) -> tuple[str, str] | None:
    """Where the address falls: it must be a fixed host address of a rendered subnet."""
    if span is None:
        return "interface_ip_in_subnet", f"ip {ip} is in no DHCP subnet"
    # The subnet's label is formatted only for a message: most rows pass.
    if address == span.first:
        where = _subnet_label(span.subnet)
        return "interface_ip_not_network", f"ip {ip} is the network address of {where}"
    if address == span.broadcast:
        where = _subnet_label(span.subnet)
        return "interface_ip_not_broadcast", f"ip {ip} is the broadcast address of {where}"
    if address in span.pool:
        where = _subnet_label(span.subnet)
        return "interface_ip_not_in_pool", f"ip {ip} is inside the dynamic pool of {where}"
    return None


def _duplicate_fault(
    mac: str, address: int, by_mac: dict[str, int], by_ip: dict[int, int]
) -> tuple[str, str] | None:
    if mac in by_mac:
        return duplicate_detail("mac", by_mac[mac])
    if address in by_ip:
        return duplicate_detail("ip", by_ip[address])
    return None


@dataclass(frozen=True, slots=True)
class Span:
    """A subnet's addresses as integers, computed once, for the per-address checks."""

    subnet: model.Subnet
    first: int  # network address
    last: int  # broadcast address
    broadcast: int | None  # the broadcast address, unless a /31 or /32 (RFC 3021)
    pool: range  # the dynamic pool; empty if there is none

    @classmethod
    def of(cls, subnet: model.Subnet) -> Span:
        network = subnet.network
        first, last = int(network.network_address), int(network.broadcast_address)
        start, end = subnet.pool_start, subnet.pool_end
        pool = (
            range(int(start), int(end) + 1) if start is not None and end is not None else range(0)
        )
        broadcast = last if network.prefixlen < 31 else None
        return cls(subnet=subnet, first=first, last=last, broadcast=broadcast, pool=pool)


class SubnetIndex:
    """Subnets that do not overlap, sorted by address: find one by bisection."""

    def __init__(self, subnets: Iterable[model.Subnet] = ()) -> None:
        self._spans: list[Span] = []
        self._starts: list[int] = []
        for subnet in subnets:
            self.add(subnet)

    def add(self, subnet: model.Subnet) -> None:
        """Insert ``subnet``; the caller has made sure it overlaps none of the others."""
        span = Span.of(subnet)
        index = bisect.bisect_right(self._starts, span.first)
        self._starts.insert(index, span.first)
        self._spans.insert(index, span)

    def overlapping(self, network: model.IPNetwork) -> model.Subnet | None:
        """A subnet sharing an address with ``network``, if any."""
        # Disjoint ranges sorted by start are sorted by end too: only the last one
        # starting at or before the end of ``network`` can reach into it.
        index = bisect.bisect_right(self._starts, int(network.broadcast_address)) - 1
        if index >= 0 and self._spans[index].last >= int(network.network_address):
            return self._spans[index].subnet
        return None

    def find(self, ip: model.IPAddress) -> model.Subnet | None:
        """The subnet that holds ``ip``, if any."""
        if not isinstance(ip, ipaddress.IPv4Address):
            return None
        span = self.span(int(ip))
        return None if span is None else span.subnet

    def span(self, address: int) -> Span | None:
        """The span of the subnet that holds the IPv4 address ``address``, if any."""
        index = bisect.bisect_right(self._starts, address) - 1
        if index >= 0 and self._spans[index].last >= address:
            return self._spans[index]
        return None


def _is_host_address(address: model.IPAddress, network: ipaddress.IPv4Network) -> bool:
    """Inside ``network`` and neither its network nor its broadcast address."""
    return (
        isinstance(address, ipaddress.IPv4Address)
        and address in network
        and address not in (network.network_address, network.broadcast_address)
    )


def _problem(kind: str, row: str, detail: str) -> Problem:
    return Problem(kind=kind, row=row, message=f"{row}: {detail} [rule {kind}]")


def _subnet_label(subnet: model.Subnet) -> str:
    return f"subnet {subnet.id} ({_show(subnet.name)} {subnet.network})"


def _interface_label(interface: model.Interface) -> str:
    name, mac = interface.name, interface.mac
    shown_name = name if is_interface_name(name) else _show(name)
    shown_mac = mac if canonical_mac(mac) else _show(mac)
    return f"interface {interface.id} (host {_show(interface.hostname)} {shown_name} {shown_mac})"


def _show(text: str) -> str:
    """Quote a database value for a message: one line, ASCII only, bounded length."""
    shown = json.dumps(text[:SHOWN_TEXT_LENGTH], ensure_ascii=True)
    return shown + "..." if len(text) > SHOWN_TEXT_LENGTH else shown
