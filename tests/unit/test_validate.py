"""validate.check: every rule skips the right row (or drops the right option), names it
clearly, keeps the lowest id on duplicates, and never depends on row order."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from typing import Any

import pytest

from generator import model, validate
from tests.unit.conftest import Golden
from tests.unit.inventories import HOSTILE, interface, sample, subnet

LAN = subnet(1, "10.0.0.0/24", name="lan", gateway="10.0.0.1", pool=("10.0.0.100", "10.0.0.200"))


def kept_ids(checked: validate.Checked) -> tuple[list[int], list[int]]:
    inventory = checked.inventory
    return [s.id for s in inventory.subnets], [i.id for i in inventory.interfaces]


def kinds(checked: validate.Checked) -> list[str]:
    return [p.kind for p in checked.problems]


def test_sample_keeps_the_good_rows_only() -> None:
    checked = validate.check(sample())
    assert kept_ids(checked) == ([1, 2, 3, 8], [1, 2, 3, 4, 5, 18, 21])


def test_sample_problems_match_golden(golden: Golden) -> None:
    messages = [p.message for p in validate.check(sample()).problems]
    golden("sample.problems.txt", "\n".join(messages) + "\n")


def test_message_names_row_value_and_rule() -> None:
    bad = interface(17, "web1", "AA:BB:CC:DD:EE:FF", "10.0.0.0")
    [problem] = validate.check(model.Inventory(subnets=(LAN,), interfaces=(bad,))).problems
    assert problem.kind == "interface_ip_not_network"
    assert problem.row == 'interface 17 (host "web1" eth0 AA:BB:CC:DD:EE:FF)'
    assert problem.message == (
        'interface 17 (host "web1" eth0 AA:BB:CC:DD:EE:FF): ip 10.0.0.0 is the network'
        ' address of subnet 1 ("lan" 10.0.0.0/24) [rule interface_ip_not_network]'
    )


def test_messages_are_one_short_ascii_line_whatever_the_row_holds() -> None:
    huge = HOSTILE + "é" * 10_000
    rows = model.Inventory(
        subnets=(subnet(1, "10.0.0.0/24", name=huge, domain_name=huge),),
        interfaces=(interface(2, huge, "02:00:00:00:00:01", "10.0.0.5", name=huge),),
    )
    problems = validate.check(rows).problems
    assert kinds(validate.check(rows)) == ["subnet_domain_name_rfc1123", "host_hostname_rfc1123"]
    for problem in problems:
        assert problem.message.isascii() and problem.message.isprintable()
        assert len(problem.message) < 500


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        (subnet(2, "2001:db8::/64"), "subnet_network_ipv4"),
        (subnet(0, "10.1.0.0/24"), "subnet_id_range"),
        (subnet(2**32 - 1, "10.1.0.0/24"), "subnet_id_range"),
        (subnet(2, "10.1.0.0/24", gateway="10.2.0.1"), "subnet_gateway_inside"),
        (subnet(2, "10.1.0.0/24", gateway="10.1.0.0"), "subnet_gateway_inside"),
        (subnet(2, "10.1.0.0/24", gateway="10.1.0.255"), "subnet_gateway_inside"),
        (subnet(2, "10.1.0.0/24", gateway="2001:db8::1"), "subnet_gateway_inside"),
        (subnet(2, "10.1.0.0/24", pool=("10.1.0.10", None)), "subnet_pool_complete"),
        (subnet(2, "10.1.0.0/24", pool=(None, "10.1.0.10")), "subnet_pool_complete"),
        (subnet(2, "10.1.0.0/24", pool=("10.1.0.0", "10.1.0.10")), "subnet_pool_inside"),
        (subnet(2, "10.1.0.0/24", pool=("10.1.0.10", "10.1.0.255")), "subnet_pool_inside"),
        (subnet(2, "10.1.0.0/24", pool=("10.1.0.10", "10.1.1.10")), "subnet_pool_inside"),
        (subnet(2, "10.1.0.0/24", pool=("10.1.0.20", "10.1.0.10")), "subnet_pool_order"),
        (subnet(2, "10.0.0.128/25"), "subnet_no_overlap"),
        (subnet(2, "10.0.0.0/16"), "subnet_no_overlap"),
        (subnet(2, "10.0.0.0/24"), "subnet_no_overlap"),
    ],
)
def test_broken_subnet_is_skipped(row: model.Subnet, kind: str) -> None:
    checked = validate.check(model.Inventory(subnets=(LAN, row), interfaces=()))
    assert kept_ids(checked) == ([1], [])
    assert kinds(checked) == [kind]
    assert checked.problems[0].row.startswith(f"subnet {row.id} (")


def test_overlap_keeps_the_lower_id_whatever_the_order() -> None:
    wide = subnet(2, "10.0.0.0/8")
    for rows in ((LAN, wide), (wide, LAN)):
        checked = validate.check(model.Inventory(subnets=rows, interfaces=()))
        assert kept_ids(checked) == ([1], [])


def test_adjacent_subnets_do_not_overlap() -> None:
    rows = tuple(subnet(n + 1, f"10.0.{n}.0/24") for n in range(50))
    checked = validate.check(model.Inventory(subnets=rows[::-1], interfaces=()))
    assert checked.problems == ()
    assert len(checked.inventory.subnets) == 50


@pytest.mark.parametrize(
    ("fields", "kind", "cleaned"),
    [
        ({"domain_name": HOSTILE}, "subnet_domain_name_rfc1123", {"domain_name": None}),
        ({"domain_name": "a..b"}, "subnet_domain_name_rfc1123", {"domain_name": None}),
        ({"lease_time": 0}, "subnet_lease_time_positive", {"lease_time": None}),
        ({"lease_time": 2**31}, "subnet_lease_time_positive", {"lease_time": None}),
        (
            {"dns_servers": ("10.0.0.2", "2001:db8::53", "10.0.0.3")},
            "subnet_dns_servers_addresses",
            {"dns_servers": ("10.0.0.2", "10.0.0.3")},
        ),
    ],
)
def test_bad_option_is_dropped_and_the_subnet_kept(
    fields: dict[str, Any], kind: str, cleaned: dict[str, Any]
) -> None:
    host = interface(5, "web1", "02:00:00:00:00:01", "10.0.0.5")
    rows = model.Inventory(subnets=(subnet(1, "10.0.0.0/24", **fields),), interfaces=(host,))
    checked = validate.check(rows)
    assert kinds(checked) == [kind]
    assert checked.problems[0].message.endswith(f"dropped [rule {kind}]")
    assert kept_ids(checked) == ([1], [5])
    expected = subnet(1, "10.0.0.0/24", **cleaned)
    assert checked.inventory.subnets == (expected,)


def test_empty_domain_name_means_none_without_a_problem() -> None:
    checked = validate.check(
        model.Inventory(subnets=(subnet(1, "10.0.0.0/24", domain_name=""),), interfaces=())
    )
    assert checked.problems == ()
    assert checked.inventory.subnets[0].domain_name is None


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        (interface(9, "web1", "02:00:00:00:00:09", "2001:db8::9"), "interface_ip_address"),
        (interface(9, "web_1", "02:00:00:00:00:09", "10.0.0.9"), "host_hostname_rfc1123"),
        (interface(9, "-web", "02:00:00:00:00:09", "10.0.0.9"), "host_hostname_rfc1123"),
        (interface(9, "web.", "02:00:00:00:00:09", "10.0.0.9"), "host_hostname_rfc1123"),
        (interface(9, "héllo", "02:00:00:00:00:09", "10.0.0.9"), "host_hostname_rfc1123"),
        (interface(9, HOSTILE, "02:00:00:00:00:09", "10.0.0.9"), "host_hostname_rfc1123"),
        (interface(9, "a" * 64, "02:00:00:00:00:09", "10.0.0.9"), "host_hostname_rfc1123"),
        (interface(9, "a." * 127, "02:00:00:00:00:09", "10.0.0.9"), "host_hostname_rfc1123"),
        (interface(9, "web1", "02:00:00:00:00:09", "10.0.0.9", name=""), "interface_name_safe"),
        (
            interface(9, "web1", "02:00:00:00:00:09", "10.0.0.9", name='eth0"}'),
            "interface_name_safe",
        ),
        (interface(9, "web1", "02:00:00:00:09", "10.0.0.9"), "interface_mac_format"),
        (interface(9, "web1", "02:00:00:00:00:09:01", "10.0.0.9"), "interface_mac_format"),
        (interface(9, "web1", "02:00-00:00:00:09", "10.0.0.9"), "interface_mac_format"),
        (interface(9, "web1", "02:00:00:00:00:0g", "10.0.0.9"), "interface_mac_format"),
        (interface(9, "web1", "01:00:5e:00:00:01", "10.0.0.9"), "interface_mac_unicast"),
        (interface(9, "web1", "00:00:00:00:00:00", "10.0.0.9"), "interface_mac_unicast"),
        (interface(9, "web1", "ff:ff:ff:ff:ff:ff", "10.0.0.9"), "interface_mac_unicast"),
        (interface(9, "web1", "02:00:00:00:00:09", "10.1.0.9"), "interface_ip_in_subnet"),
        (interface(9, "web1", "02:00:00:00:00:09", "10.0.0.0"), "interface_ip_not_network"),
        (interface(9, "web1", "02:00:00:00:00:09", "10.0.0.255"), "interface_ip_not_broadcast"),
        (interface(9, "web1", "02:00:00:00:00:09", "10.0.0.100"), "interface_ip_not_in_pool"),
        (interface(9, "web1", "02:00:00:00:00:09", "10.0.0.150"), "interface_ip_not_in_pool"),
        (interface(9, "web1", "02:00:00:00:00:09", "10.0.0.200"), "interface_ip_not_in_pool"),
    ],
)
def test_broken_interface_is_skipped(row: model.Interface, kind: str) -> None:
    good = interface(1, "ok", "02:00:00:00:00:01", "10.0.0.5")
    checked = validate.check(model.Inventory(subnets=(LAN,), interfaces=(row, good)))
    assert kept_ids(checked) == ([1], [1])
    assert kinds(checked) == [kind]
    assert checked.problems[0].row.startswith("interface 9 (host ")


@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.0.99", "10.0.0.201", "10.0.0.254"])
def test_host_addresses_outside_the_pool_are_kept(address: str) -> None:
    row = interface(9, "web1", "02:00:00:00:00:09", address)
    checked = validate.check(model.Inventory(subnets=(LAN,), interfaces=(row,)))
    assert checked.problems == ()


def test_point_to_point_subnets_follow_rfc_3021() -> None:
    rows = model.Inventory(
        subnets=(subnet(1, "10.9.0.0/31"), subnet(2, "10.9.0.4/32")),
        interfaces=(
            interface(1, "upper", "02:00:00:00:00:01", "10.9.0.1"),
            interface(2, "lower", "02:00:00:00:00:02", "10.9.0.0"),
            interface(3, "single", "02:00:00:00:00:03", "10.9.0.4"),
        ),
    )
    checked = validate.check(rows)
    assert kept_ids(checked) == ([1, 2], [1])
    assert kinds(checked) == ["interface_ip_not_network", "interface_ip_not_network"]


def test_duplicates_keep_the_lowest_id() -> None:
    rows = (
        interface(30, "c", "02:00:00:00:00:01", "10.0.0.7"),  # same mac as 10
        interface(20, "b", "02:00:00:00:00:02", "10.0.0.5"),  # same ip as 10
        interface(10, "a", "02:00:00:00:00:01", "10.0.0.5"),
    )
    checked = validate.check(model.Inventory(subnets=(LAN,), interfaces=rows))
    assert kept_ids(checked) == ([1], [10])
    assert kinds(checked) == ["interface_ip_key", "interface_mac_key"]
    assert "also on interface 10, which is kept" in checked.problems[0].message


def test_mac_duplicates_are_found_across_spellings() -> None:
    rows = (
        interface(1, "a", "02:AB:00:00:00:01", "10.0.0.5"),
        interface(2, "b", "02-ab-00-00-00-01", "10.0.0.6"),
    )
    checked = validate.check(model.Inventory(subnets=(LAN,), interfaces=rows))
    assert kinds(checked) == ["interface_mac_key"]
    assert checked.inventory.interfaces[0].mac == "02:ab:00:00:00:01"


def test_a_broken_row_never_keeps_a_good_duplicate_out() -> None:
    rows = (
        interface(1, "bad name", "02:00:00:00:00:01", "10.0.0.5"),
        interface(2, "good", "02:00:00:00:00:01", "10.0.0.5"),
    )
    checked = validate.check(model.Inventory(subnets=(LAN,), interfaces=rows))
    assert kept_ids(checked) == ([1], [2])
    assert kinds(checked) == ["host_hostname_rfc1123"]


def test_interface_in_a_skipped_subnet_is_skipped_too() -> None:
    rows = model.Inventory(
        subnets=(LAN, subnet(2, "10.0.0.0/25")),
        interfaces=(interface(1, "a", "02:00:00:00:00:01", "10.1.0.5"),),
    )
    assert kinds(validate.check(rows)) == ["subnet_no_overlap", "interface_ip_in_subnet"]


def test_result_does_not_depend_on_row_order() -> None:
    expected = validate.check(sample())
    rng = random.Random(1123)
    for _ in range(20):
        subnets, interfaces = list(sample().subnets), list(sample().interfaces)
        rng.shuffle(subnets)
        rng.shuffle(interfaces)
        shuffled = model.Inventory(subnets=tuple(subnets), interfaces=tuple(interfaces))
        assert validate.check(shuffled) == expected


def test_clean_inventory_passes_unchanged() -> None:
    clean = validate.check(sample()).inventory
    assert validate.check(clean) == validate.Checked(inventory=clean, problems=())


def test_many_rows_are_checked_quickly() -> None:
    subnets = tuple(subnet(n + 1, f"10.{n // 256}.{n % 256}.0/24") for n in range(2000))
    interfaces = tuple(
        interface(n + 1, f"h{n}", f"02:00:00:00:{n // 256:02x}:{n % 256:02x}", str(address))
        for n, address in enumerate(
            ipaddress.IPv4Address("10.0.0.10") + 256 * k for k in range(5_000)
        )
    )
    checked = validate.check(model.Inventory(subnets=subnets, interfaces=interfaces))
    # Subnet n holds address 10.0.0.10 + 256 n: the first 2000 addresses find one.
    assert len(checked.inventory.interfaces) == 2000
    assert {p.kind for p in checked.problems} == {"interface_ip_in_subnet"}


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("web1", True),
        ("Web-1.Example.COM", True),
        ("1", True),
        ("a" * 63, True),
        (".".join(["a" * 63] * 4)[:253], True),
        ("", False),
        ("a" * 64, False),
        (".".join(["a" * 63] * 4), False),
        ("-a", False),
        ("a-", False),
        ("a..b", False),
        (".a", False),
        ("a.", False),
        ("a_b", False),
        ("a b", False),
        ("a\n", False),
        ("K", True),
        ("\u212a", False),  # KELVIN SIGN, which lower() turns into ASCII 'k'
        ("ﬁ", False),
    ],
)
def test_is_rfc1123_name(text: str, ok: bool) -> None:
    assert validate.is_rfc1123_name(text) is ok


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff"),
        ("AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff"),
        ("aa:bb-cc:dd:ee:ff", None),
        ("aabb.ccdd.eeff", None),
        ("aa:bb:cc:dd:ee", None),
        ("aa:bb:cc:dd:ee:ff\n", None),
        ("aa:bb:cc:dd:ee:f", None),
    ],
)
def test_canonical_mac(text: str, canonical: str | None) -> None:
    assert validate.canonical_mac(text) == canonical


def test_checked_inventory_is_a_new_value() -> None:
    original = sample()
    validate.check(original)
    assert original == sample()
    assert dataclasses.is_dataclass(validate.check(original).problems[0])


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("02:ab:00:00:00:01", "02:ab:00:00:00:01"),  # already canonical: the fast path
        ("02:Ab:00:00:00:01", "02:ab:00:00:00:01"),
        ("02-ab-00-00-00-01", "02:ab:00:00:00:01"),
        ("02:ab:00:00:00:01:", None),
        (" 02:ab:00:00:00:01", None),
    ],
)
def test_canonical_mac_with_and_without_the_fast_path(text: str, canonical: str | None) -> None:
    assert validate.canonical_mac(text) == canonical


def test_canonical_rows_are_kept_without_a_copy() -> None:
    canonical = interface(1, "a", "02:00:00:00:00:01", "10.0.0.5")
    upper = interface(2, "b", "02:00:00:00:00:0A", "10.0.0.6")
    kept = validate.check(model.Inventory(subnets=(LAN,), interfaces=(canonical, upper)))
    first, second = kept.inventory.interfaces
    assert first is canonical
    assert second == dataclasses.replace(upper, mac="02:00:00:00:00:0a")


def test_subnet_index_finds_by_address() -> None:
    p2p = subnet(2, "10.9.0.0/31")
    index = validate.SubnetIndex([p2p, LAN])
    address = ipaddress.IPv4Address
    for ip, found in [
        ("9.255.255.255", None),
        ("10.0.0.0", LAN),
        ("10.0.0.255", LAN),
        ("10.0.1.0", None),
        ("10.9.0.1", p2p),
        ("10.9.0.2", None),
    ]:
        assert index.find(address(ip)) == found
    assert index.find(ipaddress.IPv6Address("::a00:5")) is None
    span = index.span(int(address("10.0.0.5")))
    assert span is not None and span.subnet == LAN
    assert (span.first, span.last, span.broadcast) == (0x0A000000, 0x0A0000FF, 0x0A0000FF)
    assert (span.pool.start, span.pool.stop) == (0x0A000064, 0x0A0000C9)  # .100 to .200
    p2p_span = index.span(int(address("10.9.0.0")))
    assert p2p_span is not None and p2p_span.broadcast is None and not p2p_span.pool
