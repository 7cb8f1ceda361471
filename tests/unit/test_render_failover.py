"""ISC failover pairs: both peers' files from one pair, identical but for the
``failover peer`` block; mclt and split on the primary only; explicit ports; pools
that name the peer; reservations outside the pools; a pair without a mode is an ISC
failover pair, a Kea pair is refused; the real dhcpd accepts both."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator import errors, model, render_isc, render_options, validate
from tests.unit import isc_syntax
from tests.unit.conftest import Checker, Golden
from tests.unit.inventories import interface, subnet

OPTIONS = render_options.RenderOptions()
ADDRESSES = (ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv4Address("10.0.0.3"))


def side(role: str, *, ports: tuple[int, int] = (647, 847), **timers: int) -> model.Failover:
    """One server's side of the pair dhcp-ab (dhcp-a primary at .2, dhcp-b at .3)."""
    mine, theirs = (0, 1) if role == "primary" else (1, 0)
    values = {
        "mclt": 3600,
        "max_response_delay": 60,
        "max_unacked_updates": 10,
        "load_balance_max_seconds": 3,
        "split": 128,
        **timers,
    }
    return model.Failover(
        name="dhcp-ab",
        mode="isc-failover",
        role=role,
        server_name=("dhcp-a", "dhcp-b")[mine],
        peer_name=("dhcp-a", "dhcp-b")[theirs],
        address=ADDRESSES[mine],
        port=ports[mine],
        peer_address=ADDRESSES[theirs],
        peer_port=ports[theirs],
        **values,
    )


def inventory(pair: model.Failover | None) -> model.Inventory:
    subnets = (
        subnet(1, "10.0.0.0/24", name="lan", gateway="10.0.0.1", pool=("10.0.0.100", "10.0.0.200")),
        subnet(2, "10.0.1.0/24", name="servers", gateway="10.0.1.1"),
    )  # fmt: skip
    interfaces = (
        interface(1, "web1", "02:00:00:00:00:01", "10.0.0.10", host_id=1),
        interface(2, "db1", "02:00:00:00:00:02", "10.0.1.20"),
    )
    paired = tuple(dataclasses.replace(s, failover=pair) for s in subnets)
    return model.Inventory(subnets=paired, interfaces=interfaces)


def conf(pair: model.Failover | None) -> str:
    return render_isc.render(validate.check(inventory(pair)).inventory, options=OPTIONS)


def peer_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index('failover peer "dhcp-ab" {')
    return lines[start : lines.index("}", start) + 1]


def test_primary_and_secondary_match_golden(golden: Golden) -> None:
    golden("failover-primary.isc.conf", conf(side("primary")))
    golden("failover-secondary.isc.conf", conf(side("secondary")))


def test_the_peer_blocks_mirror_each_other() -> None:
    primary, secondary = peer_block(conf(side("primary"))), peer_block(conf(side("secondary")))
    assert "  primary;" in primary and "  secondary;" in secondary
    assert {"  address 10.0.0.2;", "  port 647;", "  peer address 10.0.0.3;"} <= set(primary)
    assert {"  peer port 847;", "  mclt 3600;", "  split 128;"} <= set(primary)
    assert {"  address 10.0.0.3;", "  port 847;", "  peer address 10.0.0.2;"} <= set(secondary)
    assert "  peer port 647;" in secondary
    assert not any(line.startswith(("  mclt", "  split")) for line in secondary)


def test_pools_name_the_peer_and_reservations_stay_outside() -> None:
    statements = isc_syntax.parse(conf(side("secondary")))
    text = conf(side("secondary"))
    assert '  pool {\n    failover peer "dhcp-ab";\n    range 10.0.0.100 10.0.0.200;\n  }' in text
    assert "range" not in text.split("pool {")[0]  # no range outside a pool
    hosts = [s for s in statements if s.words and s.words[0] == "host"]
    assert len(hosts) == 2  # host blocks are top-level, never inside a pool
    # without a pair the file keeps its plain range
    assert "pool {" not in conf(None) and "failover" not in conf(None)


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_a_pair_without_a_mode_is_an_isc_failover_pair(golden: Golden, role: str) -> None:
    """dhcp_failover.mode NULL is dhcpd's own mode: the file is byte for byte the one of
    an explicit isc-failover pair (the same golden)."""
    text = conf(dataclasses.replace(side(role), mode=None))
    assert text == conf(side(role))
    golden(f"failover-{role}.isc.conf", text)


@pytest.mark.parametrize("mode", ["kea-hot-standby", "kea-load-balancing"])
def test_a_kea_pair_is_refused(mode: str) -> None:
    with pytest.raises(errors.UnsafeValue, match=rf"mode '{mode}', a Kea HA pair"):
        conf(dataclasses.replace(side("primary"), mode=mode))


@given(
    ports=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
    mclt=st.integers(1, 86400),
    split=st.integers(0, 256),
    delay=st.integers(1, 600),
)
def test_the_two_files_differ_only_in_the_peer_block(
    ports: tuple[int, int], mclt: int, split: int, delay: int
) -> None:
    timers = {"mclt": mclt, "split": split, "max_response_delay": delay}
    primary = conf(side("primary", ports=ports, **timers)).splitlines()
    secondary = conf(side("secondary", ports=ports, **timers)).splitlines()
    block = peer_block("\n".join(primary))
    start = primary.index(block[0])
    outside = primary[:start] + primary[start + len(block) :]
    other_block = peer_block("\n".join(secondary))
    other_start = secondary.index(other_block[0])
    assert start == other_start
    assert outside == secondary[:other_start] + secondary[other_start + len(other_block) :]
    changed = [
        line
        for line in difflib.unified_diff(primary, secondary, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed and all(line[1:] in block + other_block for line in changed)


@pytest.mark.dhcpd
@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_dhcpd_accepts_both_peers(dhcpd_check: Checker, role: str) -> None:
    assert dhcpd_check(conf(side(role))).skipped is False
