"""render_isc and quote: the golden dhcpd.conf, accepted by the real dhcpd, byte-stable,
and no database text able to end a string, close a block or add a statement."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from generator import errors, model, quote, render, render_isc, render_options, validate
from tests.unit import isc_syntax
from tests.unit.conftest import Checker, Golden
from tests.unit.inventories import HOSTILE, interface, sample, subnet

OPTIONS = render_options.RenderOptions()


def sample_conf() -> str:
    return render_isc.render(validate.check(sample()).inventory, options=OPTIONS)


def test_sample_matches_golden(golden: Golden) -> None:
    golden("sample.isc.conf", sample_conf())


@pytest.mark.dhcpd
def test_dhcpd_accepts_the_sample(dhcpd_check: Checker) -> None:
    assert dhcpd_check(sample_conf()).skipped is False


def test_output_is_byte_stable_whatever_the_row_order() -> None:
    checked = validate.check(sample()).inventory
    shuffled = model.Inventory(subnets=checked.subnets[::-1], interfaces=checked.interfaces[::-1])
    assert render_isc.render(shuffled, options=OPTIONS) == sample_conf()


def test_structure_of_the_sample() -> None:
    statements = isc_syntax.parse(sample_conf())
    heads = [s.words[0] for s in statements]
    assert heads[:4] == [
        "authoritative",
        "ddns-update-style",
        "default-lease-time",
        "max-lease-time",
    ]
    assert [s.words[1] for s in statements if s.words[0] == "subnet"] == [
        "10.0.0.0", "10.0.1.0", "172.16.3.0", "192.168.50.0"
    ]  # fmt: skip
    hosts = {s.words[1]: s for s in statements if s.words[0] == "host"}
    assert sorted(hosts) == [
        "db1-02-00-00-00-00-04",
        "db2.example.com-02-00-00-00-00-05",
        "gw1-02-00-00-00-00-15",
        "in-odd-subnet-02-00-00-00-00-12",
        "web1-02-00-00-00-00-01",
        "web1-02-00-00-00-00-02",
        "web1-02-00-00-00-00-03",
    ]
    body = [s.words for s in hosts["db2.example.com-02-00-00-00-00-05"].block or []]
    assert body == [
        ["hardware", "ethernet", "02:00:00:00:00:05"],
        ["fixed-address", "10.0.1.21"],
        ["option", "host-name", "DB2.Example.com"],
    ]


def test_comments_hold_no_database_text() -> None:
    comments = [line for line in sample_conf().splitlines() if line.lstrip().startswith("#")]
    assert comments == list(render_isc.HEADER)


def test_subnet_options_and_lease_times() -> None:
    rows = model.Inventory(
        subnets=(
            subnet(
                1,
                "10.0.0.0/24",
                gateway="10.0.0.1",
                dns_servers=("10.0.0.2", "10.0.0.3"),
                domain_name="example.com",
                pool=("10.0.0.100", "10.0.0.200"),
                lease_time=600,
            ),
            subnet(2, "10.0.1.0/24"),
        ),
        interfaces=(),
    )
    blocks = [s.block for s in isc_syntax.parse(render_isc.render(rows, options=OPTIONS))]
    assert [s.words for s in blocks[4] or []] == [
        ["option", "routers", "10.0.0.1"],
        ["option", "domain-name-servers", "10.0.0.2", "10.0.0.3"],
        ["option", "domain-name", "example.com"],
        ["default-lease-time", "600"],
        ["max-lease-time", "600"],
        ["range", "10.0.0.100", "10.0.0.200"],
    ]
    assert blocks[5] == []  # no pool, no options: an empty subnet block


def test_global_lease_times_come_from_options() -> None:
    options = render_options.RenderOptions(default_lease_time=60, max_lease_time=120)
    text = render_isc.render(model.Inventory(subnets=(), interfaces=()), options=options)
    assert "\ndefault-lease-time 60;\nmax-lease-time 120;\n" in text


def test_facade_dispatches_by_format() -> None:
    inventory = validate.check(sample()).inventory
    assert render.render(inventory, fmt="isc") == sample_conf()
    with pytest.raises(errors.InvalidOptions, match="unknown format"):
        render.render(inventory, fmt="bind")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "literal"),
    [
        ("example.com", '"example.com"'),
        ('a"b', r'"a\"b"'),
        ("a\\b", r'"a\\b"'),
        ("a\nb", r'"a\012b"'),
        ("\n1", r'"\0121"'),  # three digits always: the 1 stays a character
        ("a\0b", r'"a\000b"'),
        ("café", r'"caf\303\251"'),
        ("\t}{;#", r'"\011}{;#"'),
        ("", '""'),
    ],
)
def test_isc_string_escapes(text: str, literal: str) -> None:
    assert quote.isc_string(text) == literal
    [token] = isc_syntax.tokenize(literal)
    assert token.value.encode("latin-1") == text.encode("utf-8")


def test_isc_string_refuses_what_dhcpd_cannot_hold() -> None:
    assert quote.isc_string("a" * quote.MAX_STRING_BYTES)
    with pytest.raises(errors.UnsafeValue):
        quote.isc_string("a" * (quote.MAX_STRING_BYTES + 1))
    with pytest.raises(errors.UnsafeValue):
        quote.isc_string("é" * 128)  # 256 bytes
    with pytest.raises(errors.UnsafeValue):
        quote.isc_string("\udc80")  # a lone surrogate has no UTF-8 form


HOSTILE_STRINGS = [
    HOSTILE,
    '"; } host evil { fixed-address 10.0.0.9; } subnet 10.9.0.0 netmask 255.255.0.0 { "',
    "\\",
    '\\"',
    '\\\\\\"',
    "\0\1\2\x7f",
    "# not a comment\n}\n{",
    "\\x41\\101\\n",
    "日本語 🦊 ü",
    "\r\n\t\b\f\v",
]


@pytest.mark.dhcpd
@pytest.mark.parametrize("text", HOSTILE_STRINGS)
def test_dhcpd_reads_back_exactly_the_quoted_text(dhcpd_check: Checker, text: str) -> None:
    conf = (
        "subnet 10.0.0.0 netmask 255.255.255.0 {\n"
        f"  option domain-name {quote.isc_string(text)};\n"
        "}\n"
    )
    dhcpd_check(conf)
    [statement] = isc_syntax.parse(conf)
    assert [s.words for s in statement.block or []] == [
        ["option", "domain-name", text.encode("utf-8").decode("latin-1")]
    ]


@pytest.mark.parametrize(
    ("hostname", "mac", "name"),
    [
        ("web1", "02:00:00:00:00:01", "web1-02-00-00-00-00-01"),
        ("Web1.Example.COM", "02:AB:00:00:00:01", "web1.example.com-02-ab-00-00-00-01"),
        ("1host", "02-ab-00-00-00-01", "1host-02-ab-00-00-00-01"),
    ],
)
def test_host_declaration_name(hostname: str, mac: str, name: str) -> None:
    assert quote.host_declaration_name(hostname, mac) == name


@pytest.mark.parametrize(
    ("hostname", "mac"),
    [
        (HOSTILE, "02:00:00:00:00:01"),
        ("a b", "02:00:00:00:00:01"),
        ("web1", "02:00:00:00:00:01; deny"),
        ("\u212a", "02:00:00:00:00:01"),
        ("a..b", "02:00:00:00:00:01"),
    ],
)
def test_host_declaration_name_refuses_unsafe_input(hostname: str, mac: str) -> None:
    with pytest.raises(errors.UnsafeValue):
        quote.host_declaration_name(hostname, mac)


def test_render_refuses_what_validate_would_have_removed() -> None:
    lan = subnet(1, "10.0.0.0/24")
    good = interface(1, "web1", "02:00:00:00:00:01", "10.0.0.5")
    for bad in (
        dataclasses.replace(good, hostname=HOSTILE),
        dataclasses.replace(good, mac="02:00:00:00:00:01;\n}"),
        dataclasses.replace(good, ip=ipaddress.ip_address("2001:db8::5")),
    ):
        with pytest.raises(errors.UnsafeValue):
            render_isc.render(model.Inventory(subnets=(lan,), interfaces=(bad,)), options=OPTIONS)
    with pytest.raises(errors.UnsafeValue):
        render_isc.render(
            model.Inventory(subnets=(subnet(2, "2001:db8::/64"),), interfaces=()), options=OPTIONS
        )


@pytest.mark.parametrize(
    "text",
    [
        "".join(map(chr, range(0x20, 0x7F))),  # every printable ASCII character
        "plain.example.com",
        "a" * quote.MAX_STRING_BYTES,
        " leading and trailing ",
    ],
)
def test_isc_string_fast_path_agrees_with_escaping(text: str) -> None:
    # Escape byte by byte, as dhcpd reads it: the fast path must give the same literal.
    escaped = "".join(
        "\\" + chr(b) if chr(b) in '"\\' else chr(b) if 0x20 <= b <= 0x7E else f"\\{b:03o}"
        for b in text.encode("utf-8")
    )
    assert quote.isc_string(text) == f'"{escaped}"'


@pytest.mark.parametrize(
    "address", ["0.0.0.0", "10.0.0.1", "10.0.1.1", "192.168.255.254", "255.255.255.255"]
)
def test_ipv4_text_is_str_of_the_address(address: str) -> None:
    assert quote.ipv4_text(ipaddress.IPv4Address(address)) == address


def test_ipv4_text_refuses_ipv6() -> None:
    with pytest.raises(errors.UnsafeValue):
        quote.ipv4_text(ipaddress.IPv6Address("::1"))


def test_host_declaration_checks_the_name_then_the_mac() -> None:
    assert quote.host_declaration("Web1", "02-AB-00-00-00-01") == (
        "web1-02-ab-00-00-00-01",
        "02:ab:00:00:00:01",
    )
    with pytest.raises(errors.UnsafeValue, match="host name"):
        quote.host_declaration("a b", "not a mac")
    with pytest.raises(errors.UnsafeValue, match="MAC"):
        quote.host_declaration("web1", "not a mac")
