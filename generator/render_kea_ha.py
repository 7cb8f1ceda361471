"""Kea HA: the hook section of a Kea server that is one side of a failover pair.

A pair in mode ``kea-hot-standby`` or ``kea-load-balancing`` (``model.Failover``; a
pair without a mode is in hot-standby, ``model.DEFAULT_MODES``) loads
``libdhcp_lease_cmds.so`` (the partner's lease updates arrive as its commands) and
``libdhcp_ha.so``. Both sides render the same peer list, primary first, from the one
``dhcp_failover`` row: the two configs differ only in ``this-server-name``.
Kea 2.2's peers talk through their ``kea-ctrl-agent`` (``render_kea_agent``), at the
peer URLs rendered here.

Load-balancing splits every pool in two halves, one per server, by the classes the
hook assigns: ``HA_`` + the peer's name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from generator import errors, model, quote

JSON = dict[str, Any]

LEASE_CMDS = "libdhcp_lease_cmds.so"
HA = "libdhcp_ha.so"
FORMAT = "kea"  # model.Failover.effective_mode: a pair without a mode is kea-hot-standby
# dhcp_failover.mode → the hook's mode; ISC's own mode has no Kea rendering.
MODES = {"kea-hot-standby": "hot-standby", "kea-load-balancing": "load-balancing"}
# model.Failover.role → the hook's role, by mode (hot-standby's second server is the standby).
ROLES = {
    "hot-standby": {"primary": "primary", "secondary": "standby"},
    "load-balancing": {"primary": "primary", "secondary": "secondary"},
}
CLASS_PREFIX = "HA_"  # Kea 2.2 names a load-balancing scope's class "HA_" + the peer name


def pair_of(subnets: Iterable[model.Subnet]) -> model.Failover | None:
    """The Kea pair the subnets carry (every subnet of a ``--server`` scope carries the
    same), None without one. ``errors.UnsafeValue`` for an ISC pair, or for subnets that
    do not agree on their pair."""
    pairs = {subnet.failover for subnet in subnets}
    if pairs == {None} or not pairs:
        return None
    if len(pairs) > 1:
        names = sorted(pair.name if pair else "(none)" for pair in pairs)
        raise errors.UnsafeValue(f"the subnets of one scope carry different pairs: {names}")
    (pair,) = pairs
    assert pair is not None
    mode = pair.effective_mode(FORMAT)
    if mode not in MODES:
        raise errors.UnsafeValue(
            f"dhcp_failover {pair.name!r} is in mode {mode!r}, for ISC dhcpd: render it"
            f" with --format isc, or set its mode to one of {', '.join(sorted(MODES))}"
        )
    if pair.role not in ROLES[MODES[mode]]:
        raise errors.UnsafeValue(f"dhcp_failover {pair.name!r}: role {pair.role!r} is unknown")
    return pair


def hook_mode(pair: model.Failover) -> str:
    """The hook's ``mode`` for ``pair`` (one ``pair_of`` accepted): ``hot-standby`` for a
    pair without a mode."""
    return MODES[pair.effective_mode(FORMAT)]


def hooks_libraries(pair: model.Failover, *, hooks_dir: str) -> list[JSON]:
    """``hooks-libraries``: lease commands, then HA with this server's side of ``pair``."""
    directory = hooks_dir.rstrip("/")
    return [
        {"library": f"{directory}/{LEASE_CMDS}"},
        {"library": f"{directory}/{HA}", "parameters": {"high-availability": [_ha(pair)]}},
    ]


def _ha(pair: model.Failover) -> JSON:
    return {
        "this-server-name": pair.server_name,
        "mode": hook_mode(pair),
        "heartbeat-delay": pair.heartbeat_delay_ms,
        "max-response-delay": pair.max_response_delay_ms,
        "max-ack-delay": pair.max_ack_delay_ms,
        "max-unacked-clients": pair.max_unacked_clients,
        "peers": peers(pair),
    }


def peers(pair: model.Failover) -> list[JSON]:
    """Both peers, the primary first, the same list on either side."""
    roles = ROLES[hook_mode(pair)]
    mine = _peer(pair.server_name, pair.address, pair.port, roles[pair.role])
    other_role = "secondary" if pair.role == "primary" else "primary"
    theirs = _peer(pair.peer_name, pair.peer_address, pair.peer_port, roles[other_role])
    return [mine, theirs] if pair.role == "primary" else [theirs, mine]


def _peer(name: str, address: model.IPAddress, port: int, role: str) -> JSON:
    return {
        "name": name,
        "url": peer_url(address, port),
        "role": role,
        "auto-failover": True,
    }


def peer_url(address: model.IPAddress, port: int) -> str:
    """Where a peer's ``kea-ctrl-agent`` listens: ``http://ADDRESS:PORT/``."""
    if not 1 <= port <= 65535:
        raise errors.UnsafeValue(f"peer port {port} is not in 1..65535")
    return f"http://{quote.ipv4_text(address)}:{port:d}/"


def scope_classes(pair: model.Failover) -> tuple[str, str]:
    """The load-balancing classes of the primary's and of the secondary's scope."""
    primary, secondary = (
        (pair.server_name, pair.peer_name)
        if pair.role == "primary"
        else (pair.peer_name, pair.server_name)
    )
    return CLASS_PREFIX + primary, CLASS_PREFIX + secondary


def pools(
    subnet_id: int, start: ipaddress.IPv4Address, end: ipaddress.IPv4Address, pair: model.Failover
) -> list[JSON]:
    """The subnet's pool: whole in hot-standby (the standby serves it only once its
    partner is down); in load-balancing its lower half for the primary's class and
    its upper half for the secondary's."""
    if hook_mode(pair) != "load-balancing":
        return [{"pool": f"{start} - {end}"}]
    size = int(end) - int(start) + 1
    if size < 2:
        raise errors.UnsafeValue(
            f"subnet {subnet_id}: pool {start} - {end} has fewer than two addresses, so it"
            f" cannot be split between the load-balancing servers of {pair.name!r}"
        )
    last_low = ipaddress.IPv4Address(int(start) + (size + 1) // 2 - 1)
    first_high = last_low + 1
    low, high = scope_classes(pair)
    return [
        {"pool": f"{start} - {last_low}", "client-class": low},
        {"pool": f"{first_high} - {end}", "client-class": high},
    ]
