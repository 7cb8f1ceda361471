"""Make database values safe to write into a DHCP server configuration.

Addresses must be IPv4 and MACs six octets. ISC dhcpd.conf holds text in two
shapes: quoted strings (option values such as host-name and domain-name) and bare
names (a ``host`` declaration's name, which dhcpd does not allow to be quoted).
Each function returns safe text or raises ``UnsafeValue``: it never emits anything
a database value could use to end a block or add a statement.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from generator import errors, model, validate

# A DHCP option holds at most 255 bytes (dhcpd's own token buffer is 1500 bytes).
MAX_STRING_BYTES = 255

_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\"}
# Printable ASCII but quote and backslash, short enough: such text needs no escape.
_PLAIN = re.compile(rf"[ !#-\[\]-~]{{0,{MAX_STRING_BYTES}}}", re.ASCII)
_OCTETS = tuple(str(octet) for octet in range(256))


def isc_string(text: str) -> str:
    """Return ``text`` as a dhcpd.conf string literal, quotes included.

    Printable ASCII stays readable; every other byte of the UTF-8 encoding becomes a
    three-digit octal escape (always three digits, so a following digit is never
    swallowed into the escape). Quote and backslash are backslash-escaped.
    """
    if _PLAIN.fullmatch(text) is not None:  # the usual case, at a fifth of the cost
        return f'"{text}"'
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errors.UnsafeValue(f"text is not valid Unicode: {exc}") from exc
    if len(data) > MAX_STRING_BYTES:
        raise errors.UnsafeValue(f"text of {len(data)} bytes exceeds {MAX_STRING_BYTES} bytes")
    parts = []
    for byte in data:
        if byte in _ESCAPES:
            parts.append(_ESCAPES[byte])
        elif 0x20 <= byte <= 0x7E:
            parts.append(chr(byte))
        else:
            parts.append(f"\\{byte:03o}")
    return '"' + "".join(parts) + '"'


def hardware_address(mac: str) -> str:
    """Return ``mac`` in the canonical lower-case colon form, or raise ``UnsafeValue``."""
    canonical = validate.canonical_mac(mac)
    if canonical is None:
        raise errors.UnsafeValue(f"not a 6-octet MAC address: {mac!r}")
    return canonical


def host_declaration_name(hostname: str, mac: str) -> str:
    """Return the ``host`` declaration name ``<hostname>-<mac with dashes>``, lower case.

    dhcpd requires the name to be unique in the whole file; the MAC makes it so,
    because a MAC is reserved at most once. Only RFC 1123 host names are accepted:
    letters, digits, inner hyphens and dots cannot end the block or add a statement.
    """
    return host_declaration(hostname, mac)[0]


def host_declaration(hostname: str, mac: str) -> tuple[str, str]:
    """``host_declaration_name`` and ``hardware_address``, checking the MAC only once."""
    if not validate.is_rfc1123_name(hostname):
        raise errors.UnsafeValue(f"not an RFC 1123 host name: {hostname!r}")
    canonical = hardware_address(mac)
    return f"{hostname.lower()}-{canonical.replace(':', '-')}", canonical


def ipv4(address: model.IPAddress) -> ipaddress.IPv4Address:
    """Return ``address`` if it is IPv4, else raise ``UnsafeValue`` (both files are v4)."""
    if not isinstance(address, ipaddress.IPv4Address):
        raise errors.UnsafeValue(f"address {address} is not IPv4")
    return address


def ipv4_text(address: model.IPAddress) -> str:
    """``str(ipv4(address))`` at under half the cost: hosts share a few /24 prefixes."""
    value = int(ipv4(address))
    return _prefix_text(value >> 8) + _OCTETS[value & 255]


@functools.lru_cache(maxsize=4096)
def _prefix_text(prefix: int) -> str:
    """The first three octets of an address and a dot, from its top 24 bits."""
    return f"{prefix >> 16}.{prefix >> 8 & 255}.{prefix & 255}."
