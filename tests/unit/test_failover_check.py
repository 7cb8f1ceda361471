"""Checks of a failover pair before anything is written (``generator.failover``): the
classic mistakes of other projects' pairs, each refused with the pair and the rule
named, on hand-built sides (the database refuses most of them, migration 0008); a pair
without a mode, which fits either format; the renderer guard on both peers' ISC preambles; the clock skew against the database."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generator import failover, metrics, model, render_isc, render_options, validate
from tests.unit.inventories import interface, subnet

OPTIONS = render_options.RenderOptions()
A, B = ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv4Address("10.0.0.3")


def primary(**changes: object) -> model.Failover:
    """dhcp-a's side of the pair dhcp-ab: primary at 10.0.0.2:647, dhcp-b at .3:847."""
    side = model.Failover(
        name="dhcp-ab",
        mode="isc-failover",
        role="primary",
        server_name="dhcp-a",
        peer_name="dhcp-b",
        address=A,
        port=647,
        peer_address=B,
        peer_port=847,
        mclt=3600,
        max_response_delay=60,
        max_unacked_updates=10,
        load_balance_max_seconds=3,
        split=128,
    )
    return dataclasses.replace(side, **changes)  # type: ignore[arg-type]


def scope(side: model.Failover | None, *more: model.Failover | None) -> tuple[model.Subnet, ...]:
    """Two subnets (one with a pool), carrying ``side`` (and ``more`` on the second)."""
    pairs = (side, *more) if more else (side, side)
    return (
        dataclasses.replace(
            subnet(1, "10.0.0.0/24", gateway="10.0.0.1", pool=("10.0.0.100", "10.0.0.200")),
            failover=pairs[0],
        ),
        dataclasses.replace(subnet(2, "10.0.1.0/24", gateway="10.0.1.1"), failover=pairs[1]),
    )


def rules(problems: tuple[validate.Problem, ...] | list[validate.Problem]) -> list[str]:
    return [problem.kind for problem in problems]


def only(problems: tuple[validate.Problem, ...] | list[validate.Problem]) -> validate.Problem:
    assert len(problems) == 1, [p.message for p in problems]
    return problems[0]


# ---------------------------------------------------------------- a good pair


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("isc-failover", "isc"), ("kea-hot-standby", "kea"), ("kea-load-balancing", "kea")],
)
def test_a_consistent_pair_passes_on_both_sides(mode: str, fmt: str) -> None:
    side = primary(mode=mode)
    assert failover.check(scope(side), fmt=fmt, options=OPTIONS) == ()
    assert failover.check(scope(failover.partner(side)), fmt=fmt, options=OPTIONS) == ()
    assert failover.check_sides(side, failover.partner(side)) == []


@pytest.mark.parametrize("fmt", ["isc", "kea"])
def test_a_pair_without_a_mode_fits_either_format(fmt: str) -> None:
    """dhcp_failover.mode NULL (migration 0009) runs in the server's default mode: no
    failover_mode_format on either side, the ISC renderer guard included."""
    side = primary(mode=None)
    assert failover.check(scope(side), fmt=fmt, options=OPTIONS) == ()
    assert failover.check(scope(failover.partner(side)), fmt=fmt, options=OPTIONS) == ()
    assert failover.partner(side).mode is None


def test_the_effective_mode_is_the_rows_or_the_formats_default() -> None:
    assert model.DEFAULT_MODES == {"isc": "isc-failover", "kea": "kea-hot-standby"}
    assert [primary(mode=None).effective_mode(fmt) for fmt in ("isc", "kea")] == [
        "isc-failover",
        "kea-hot-standby",
    ]
    for mode in failover.MODE_FORMATS:  # an explicit mode wins, whatever the format
        assert [primary(mode=mode).effective_mode(fmt) for fmt in ("isc", "kea")] == [mode] * 2


def test_a_scope_without_a_pair_has_nothing_to_check() -> None:
    assert failover.check(scope(None), fmt="isc") == ()
    assert failover.check((), fmt="kea") == ()
    assert not failover.paired(scope(None)) and failover.paired(scope(primary()))


def test_the_partner_is_the_same_row_read_from_the_other_server() -> None:
    side = primary()
    other = failover.partner(side)
    assert (other.role, other.server_name, other.peer_name) == ("secondary", "dhcp-b", "dhcp-a")
    assert (other.address, other.port, other.peer_address, other.peer_port) == (B, 847, A, 647)
    assert (other.name, other.mclt, other.split) == (side.name, side.mclt, side.split)
    assert failover.partner(other) == side


@given(
    ports=st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
    last_octets=st.tuples(st.integers(1, 254), st.integers(1, 254)),
    split=st.integers(0, 256),
    mclt=st.integers(1, 86400),
    role=st.sampled_from(failover.ROLES),
)
def test_any_pair_the_database_accepts_passes(
    ports: tuple[int, int], last_octets: tuple[int, int], split: int, mclt: int, role: str
) -> None:
    addresses = [ipaddress.IPv4Address(f"10.0.0.{octet}") for octet in last_octets]
    if (addresses[0], ports[0]) == (addresses[1], ports[1]):
        return  # the database refuses equal endpoints (dhcp_failover_endpoints_distinct)
    side = primary(
        address=addresses[0], port=ports[0], peer_address=addresses[1], peer_port=ports[1]
    )
    side = dataclasses.replace(side, split=split, mclt=mclt)
    if role == "secondary":
        side = failover.partner(side)
    assert failover.check(scope(side), fmt="isc", options=OPTIONS) == ()


# ---------------------------------------------------------------- roles


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_both_peers_in_one_role_are_refused(role: str) -> None:
    mine = primary(role=role)
    theirs = dataclasses.replace(failover.partner(primary()), role=role)
    problem = only(failover.check_sides(mine, theirs))
    assert problem.kind == "failover_one_primary"
    assert f"both peers are {role}" in problem.message
    assert problem.message.startswith('dhcp_failover "dhcp-ab" ("dhcp-a" as')
    assert problem.message.endswith("[rule failover_one_primary]")


@pytest.mark.parametrize("role", ["standby", "backup", "PRIMARY", ""])
def test_a_role_the_modes_do_not_have_is_refused(role: str) -> None:
    for mode, fmt in (("isc-failover", "isc"), ("kea-hot-standby", "kea")):
        found = failover.check(scope(primary(role=role, mode=mode)), fmt=fmt)
        assert "failover_role_known" in rules(found), (mode, role)
        assert f"does not fit mode {mode!r}".replace("'", '"') in found[0].message
    for fmt, mode in model.DEFAULT_MODES.items():  # no mode: the one it runs in is named
        found = failover.check(scope(primary(role=role, mode=None)), fmt=fmt)
        assert "failover_role_known" in rules(found), (fmt, role)
        assert f'does not fit mode "{mode}"' in found[0].message


# ---------------------------------------------------------------- endpoints


def test_swapped_ports_are_refused() -> None:
    """OPNsense #2074/#1645: each peer's `port` must be the other's `peer port`."""
    mine = primary()
    theirs = dataclasses.replace(failover.partner(mine), port=647, peer_port=847)
    found = failover.check_sides(mine, theirs)
    assert rules(found) == ["failover_endpoints_mirrored", "failover_endpoints_mirrored"]
    assert '"dhcp-a" listens on 10.0.0.2 port 647 but "dhcp-b" expects it at 10.0.0.2 port 847' in (
        found[0].message
    )


def test_inconsistent_addresses_are_refused() -> None:
    mine = primary()
    theirs = dataclasses.replace(
        failover.partner(mine), peer_address=ipaddress.IPv4Address("10.0.0.9")
    )
    problem = only(failover.check_sides(mine, theirs))
    assert problem.kind == "failover_endpoints_mirrored"
    assert "expects it at 10.0.0.9 port 647" in problem.message


def test_one_endpoint_for_both_peers_is_refused() -> None:
    found = failover.check(scope(primary(peer_address=A, peer_port=647)), fmt="isc")
    assert "failover_endpoints_distinct" in rules(found)
    assert "both peers would listen on 10.0.0.2 port 647" in found[0].message


def test_ports_and_addresses_out_of_range_are_refused() -> None:
    found = failover.check(scope(primary(port=0, peer_port=65536)), fmt="isc")
    assert rules(found).count("failover_port_range") == 2
    v6 = ipaddress.IPv6Address("fd00::2")
    assert "failover_address_ipv4" in rules(failover.check(scope(primary(address=v6)), fmt="isc"))


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("peer", ["dhcp-a", "DHCP-A", "Dhcp-A"])
def test_one_name_on_both_peers_is_refused(peer: str) -> None:
    """VyOS #4563, OPNsense #7354: this-server-name copied to the other peer."""
    found = failover.check(scope(primary(peer_name=peer)), fmt="isc")
    assert "failover_peer_names_distinct" in rules(found)
    assert 'both peers are named "dhcp-a"' in found[0].message


def test_names_that_do_not_mirror_are_refused() -> None:
    mine = primary()
    theirs = dataclasses.replace(failover.partner(mine), peer_name="dhcp-c")
    problem = only(failover.check_sides(mine, theirs))
    assert problem.kind == "failover_names_mirrored"
    assert '"dhcp-b" names its peer "dhcp-c", not "dhcp-a"' in problem.message


@pytest.mark.parametrize("name", ['x"; }\nfailover peer "y', "", "-lead", "a" * 64, "pair ab"])
def test_a_pair_name_that_is_not_plain_is_refused(name: str) -> None:
    problem = failover.check(scope(primary(name=name)), fmt="isc")[0]
    assert problem.kind == "failover_name_plain"
    assert "\n" not in problem.message and problem.message.isascii()


def test_the_peers_must_agree_on_the_pair() -> None:
    mine = primary()
    theirs = dataclasses.replace(failover.partner(mine), mclt=60, name="dhcp-xy")
    problem = only(failover.check_sides(mine, theirs))
    assert problem.kind == "failover_same_pair"
    assert "disagree on name, mclt" in problem.message


# ---------------------------------------------------------------- scope, mode, timers


def test_subnets_of_one_scope_carry_one_pair() -> None:
    other = primary(name="dhcp-cd", server_name="dhcp-c", peer_name="dhcp-d")
    for sides in ((primary(), None), (primary(), other), (None, other)):
        problem = only(failover.check(scope(*sides), fmt="isc"))
        assert problem.kind == "failover_one_pair_per_scope"
    problem = only(failover.check(scope(primary(), None), fmt="isc"))
    assert 'subnets 1: pair "dhcp-ab"; subnets 2: no pair' in problem.message


@pytest.mark.parametrize(
    ("mode", "fmt", "needs"),
    [
        ("kea-hot-standby", "isc", "kea"),
        ("kea-load-balancing", "isc", "kea"),
        ("isc-failover", "kea", "isc"),
    ],
)
def test_a_mode_the_format_cannot_run_is_refused(mode: str, fmt: str, needs: str) -> None:
    problem = only(failover.check(scope(primary(mode=mode)), fmt=fmt))
    assert problem.kind == "failover_mode_format"
    assert f"mode {mode} cannot be rendered as {fmt} (it needs --format {needs})" in (
        problem.message
    )


def test_an_unknown_mode_is_refused() -> None:
    problem = only(failover.check(scope(primary(mode="dhcp-failover")), fmt="isc"))
    assert problem.kind == "failover_mode_known"


def test_sides_that_disagree_on_leaving_the_mode_out_are_not_one_pair() -> None:
    """Both sides come from one row, so both have a mode or neither has: a side without
    a mode beside one with the format's default is no pair, though they would render
    alike."""
    mine = primary(mode=None)
    theirs = dataclasses.replace(failover.partner(mine), mode="isc-failover")
    problem = only(failover.check_sides(mine, theirs))
    assert problem.kind == "failover_same_pair"
    assert "the peers disagree on mode" in problem.message


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"split": 257}, "failover_split_range"),
        ({"split": -1}, "failover_split_range"),
        ({"mclt": 0}, "failover_mclt_positive"),
        ({"mclt": -3600}, "failover_mclt_positive"),
        ({"max_response_delay": 0}, "failover_timers_valid"),
        ({"heartbeat_delay_ms": 0}, "failover_timers_valid"),
        ({"max_unacked_clients": -1}, "failover_timers_valid"),
    ],
)
def test_timers_out_of_range_are_refused(changes: dict[str, int], rule: str) -> None:
    ((field, value),) = changes.items()
    problem = only(failover.check(scope(primary(**changes)), fmt="isc"))
    assert problem.kind == rule
    assert f"{field} {value}" in problem.message


@pytest.mark.parametrize("split", [0, 256])
def test_split_bounds_are_accepted(split: int) -> None:
    assert failover.check(scope(primary(split=split)), fmt="isc", options=OPTIONS) == ()


def test_refused_carries_every_problem_in_its_message() -> None:
    with pytest.raises(failover.Refused) as raised:
        failover.refuse_unfit(scope(primary(mclt=0, split=300)), fmt="isc")
    assert rules(raised.value.problems) == ["failover_split_range", "failover_mclt_positive"]
    assert "[rule failover_split_range]" in str(raised.value)
    assert "[rule failover_mclt_positive]" in str(raised.value)
    failover.refuse_unfit(scope(primary()), fmt="isc")  # a good pair: no exception


# ---------------------------------------------------------------- fixed addresses


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_a_fixed_address_inside_the_pool_is_left_out_on_both_peers(role: str) -> None:
    """validate's interface_ip_not_in_pool holds for a paired scope: both peers hand out
    the pool, so a reservation inside it could be leased to another client by either."""
    side = primary() if role == "primary" else failover.partner(primary())
    inventory = model.Inventory(
        subnets=scope(side),
        interfaces=(
            interface(1, "web1", "02:00:00:00:00:01", "10.0.0.10"),
            interface(2, "in-pool", "02:00:00:00:00:02", "10.0.0.150"),
            interface(3, "pool-end", "02:00:00:00:00:03", "10.0.0.200"),
        ),
    )
    checked = validate.check(inventory)
    assert [i.id for i in checked.inventory.interfaces] == [1]
    assert rules(checked.problems) == ["interface_ip_not_in_pool"] * 2
    text = render_isc.render(checked.inventory, options=OPTIONS)
    assert "10.0.0.150;" not in text and "fixed-address 10.0.0.10;" in text


# ---------------------------------------------------------------- the renderer guard


def preambles() -> tuple[str, str]:
    side = primary()
    return (
        render_isc.preamble(scope(side), options=OPTIONS),
        render_isc.preamble(scope(failover.partner(side)), options=OPTIONS),
    )


def test_the_rendered_preambles_of_a_pair_pass_the_guard() -> None:
    first, second = preambles()
    assert failover.compare_isc_preambles(first, second, name="dhcp-ab") == []
    assert failover.compare_isc_preambles(second, first, name="dhcp-ab") == []


def test_the_guard_finds_both_peers_rendered_primary() -> None:
    first, second = preambles()
    broken = second.replace("  secondary;", "  primary;")
    found = failover.compare_isc_preambles(first, broken, name="dhcp-ab")
    assert found == ["2 of the two peer blocks say primary, not one"]


def test_the_guard_finds_swapped_ports() -> None:
    first, second = preambles()
    broken = second.replace("  port 847;", "  port 647;").replace(
        "peer port 647;", "peer port 847;"
    )
    found = failover.compare_isc_preambles(first, broken, name="dhcp-ab")
    assert found == ["port and peer port are not crossed between the peers"]


def test_the_guard_finds_mclt_or_split_on_the_secondary() -> None:
    first, second = preambles()
    broken = second.replace("  secondary;", "  secondary;\n  mclt 3600;")
    found = failover.compare_isc_preambles(first, broken, name="dhcp-ab")
    assert found == ["mclt must be in the primary's block only"]
    missing = first.replace("  split 128;\n", "")
    found = failover.compare_isc_preambles(missing, second, name="dhcp-ab")
    assert found == ["split must be in the primary's block only"]


def test_the_guard_finds_a_difference_outside_the_peer_block() -> None:
    first, second = preambles()
    broken = second.replace("option routers 10.0.0.1;", "option routers 10.0.0.254;")
    found = failover.compare_isc_preambles(first, broken, name="dhcp-ab")
    assert found == ["the two files differ outside the failover peer block"]
    missing = second.replace('failover peer "dhcp-ab" {', 'failover peer "other" {')
    assert failover.compare_isc_preambles(first, missing, name="dhcp-ab") == [
        "a preamble holds 0 'failover peer \"dhcp-ab\" {' blocks, not one"
    ]


def test_check_runs_the_guard_for_isc_only() -> None:
    """The guard is part of ``check`` for ISC; a renderer bug would be named as
    failover_render_mirrored (the good renderer gives nothing to name)."""
    assert failover.check_isc_render(scope(primary()), options=OPTIONS) == []
    assert failover.check(scope(primary(mode="kea-hot-standby")), fmt="kea") == ()


# ---------------------------------------------------------------- clocks


class FakeClock:
    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def test_clock_skew_compares_the_middle_of_the_round_trip() -> None:
    clock = FakeClock(1000.0, 1000.4)
    assert failover.clock_skew(lambda: 994.0, clock=clock) == pytest.approx(6.2)
    assert clock.readings == []
    behind = failover.clock_skew(lambda: 1010.0, clock=FakeClock(1000.0, 1000.0))
    assert behind == pytest.approx(-10.0)
    # a slow round trip is not skew
    slow = failover.clock_skew(lambda: 1001.0, clock=FakeClock(1000.0, 1002.0))
    assert slow == pytest.approx(0.0)


@pytest.mark.parametrize(("skew", "warned"), [(0.0, False), (4.9, False), (-5.0, False),
                                              (5.1, True), (-30.0, True)])  # fmt: skip
def test_a_skew_past_the_threshold_is_a_warning(
    caplog: pytest.LogCaptureFixture, skew: float, warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="generator.failover"):
        assert failover.report_skew(skew) is warned
    records = [r for r in caplog.records if getattr(r, "action", None) == "clock_skew"]
    assert len(records) == int(warned)
    if warned:
        assert f"{skew:+.1f} s off the database's" in records[0].getMessage()
        assert "NTP" in records[0].getMessage()


def test_the_skew_gauge_is_nan_until_measured() -> None:
    registry = metrics.Metrics().registry
    value = registry.get_sample_value("dhcp_generator_clock_skew_seconds")
    assert value is not None and value != value  # NaN
