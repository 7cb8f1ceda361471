"""Hand-written DHCP server configs for the harness: a pool and fixed addresses by MAC.

Used by the harness self-test, and as the file a server starts with before the
generator takes over (as a packaged server does in a real deployment).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from tests.e2e import netns

POOL = (100, 150)  # host numbers of the dynamic range in the link's /24


def pool_range(net: netns.Link) -> tuple[str, str]:
    return str(net.host(POOL[0])), str(net.host(POOL[1]))


def in_pool(net: netns.Link, address: str | None) -> bool:
    """Whether ``address`` is a dynamic (pool) address of ``net``."""
    if address is None:
        return False
    first, last = (int(net.host(n)) for n in POOL)
    return first <= int(ipaddress.IPv4Address(address)) <= last


def isc(net: netns.Link, hosts: dict[str, int]) -> str:
    """dhcpd.conf: the link's subnet with the pool, ``hosts`` maps MAC -> host number."""
    network = net.network
    start, end = pool_range(net)
    lines = [
        "authoritative;",
        "default-lease-time 600;",
        "max-lease-time 600;",
        f"subnet {network.network_address} netmask {network.netmask} {{",
        f"  range {start} {end};",
        "}",
    ]
    for i, (mac, n) in enumerate(sorted(hosts.items())):
        lines.append(f"host h{i} {{ hardware ethernet {mac}; fixed-address {net.host(n)}; }}")
    return "\n".join(lines) + "\n"


def kea(net: netns.Link, workdir: Path, hosts: dict[str, int]) -> str:
    """kea-dhcp4.conf for ``netns.kea_dhcp4(net, workdir)``, same content as ``isc``."""
    paths = netns.kea_paths(workdir)
    start, end = pool_range(net)
    config = {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [net.server_if]},
            "control-socket": {"socket-type": "unix", "socket-name": str(paths["control_socket"])},
            "lease-database": {"type": "memfile", "name": str(paths["lease_file"])},
            "valid-lifetime": 600,
            "host-reservation-identifiers": ["hw-address"],
            "subnet4": [
                {
                    "id": 1,
                    "subnet": str(net.network),
                    "pools": [{"pool": f"{start} - {end}"}],
                    "reservations": [
                        {"hw-address": mac, "ip-address": str(net.host(n))}
                        for mac, n in sorted(hosts.items())
                    ],
                }
            ],
        }
    }
    return json.dumps(config, indent=2) + "\n"
