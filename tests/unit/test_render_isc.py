"""render_isc and quote: the golden dhcpd.conf, accepted by the real dhcpd, byte-stable,
and no database text able to end a string, close a block or add a statement."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from generator import errors, model, quote, render, render_isc, render_options, validate
from tests.unit import isc_syntax
from tests.unit.conftest import Checker, Golden
from tests.unit.inventories import HOSTILE, boot, boot_sample, interface, sample, subnet

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
    assert [s.words for s in blocks[5] or []] == [
        ["option", "routers", "10.0.0.1"],
        ["option", "domain-name-servers", "10.0.0.2", "10.0.0.3"],
        ["option", "domain-name", "example.com"],
        ["default-lease-time", "600"],
        ["max-lease-time", "600"],
        ["range", "10.0.0.100", "10.0.0.200"],
    ]
    assert blocks[6] == []  # no pool, no options: an empty subnet block


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


# -- boot options (PXE) -----------------------------------------------------------------


def boot_conf() -> str:
    checked = validate.check(boot_sample())
    assert checked.problems == ()
    return render_isc.render(checked.inventory, options=OPTIONS)


def test_boot_sample_matches_golden(golden: Golden) -> None:
    golden("boot.isc.conf", boot_conf())


@pytest.mark.dhcpd
def test_dhcpd_accepts_the_boot_sample(dhcpd_check: Checker) -> None:
    assert dhcpd_check(boot_conf()).skipped is False


def _bodies(text: str) -> dict[str, list[list[str]]]:
    """Each subnet (by address) and host (by name): the words of its statements, an
    ``if`` as its words followed by those of its block."""
    found = {}
    for statement in isc_syntax.parse(text):
        if statement.words[0] in ("subnet", "host"):
            body = []
            for inner in statement.block or []:
                body.append(inner.words)
                body += [["  ", *nested.words] for nested in inner.block or []]
            found[statement.words[1]] = body
    return found


UEFI_X64 = ["if", "option", "arch", "=", "00:07", "or", "option", "arch", "=", "00:09"]


def test_subnet_boot_options_each_level_and_architecture() -> None:
    statements = isc_syntax.parse(boot_conf())
    assert "option arch code 93 = unsigned integer 16" in [" ".join(s.words) for s in statements]
    bodies = _bodies(boot_conf())
    assert bodies["10.0.0.0"] == [
        ["next-server", "10.0.0.5"],
        ["filename", "pxelinux.0"],
        ["if", "option", "arch", "=", "00:00"],
        ["  ", "filename", "bios/pxelinux.0"],
        UEFI_X64,
        ["  ", "filename", "grubx64.efi"],
        ["if", "option", "arch", "=", "00:0b"],
        ["  ", "filename", "grubaa64.efi"],
        ["range", "10.0.0.100", "10.0.0.200"],
    ]
    assert bodies["10.0.1.0"] == [["filename", "undionly.kpxe"]]
    assert bodies["10.0.2.0"] == []


HOST_HEAD = 3  # hardware ethernet, fixed-address, option host-name


def test_host_blocks_carry_what_their_host_or_hardware_type_sets() -> None:
    bodies = {
        name.split("-02-")[0]: body[HOST_HEAD:] for name, body in _bodies(boot_conf()).items()
    }
    assert bodies["inherits"] == []  # the subnet's options apply
    assert bodies["own-server"] == [["next-server", "10.0.0.6"]]  # the subnet's files
    assert bodies["own-file"] == [["filename", "install.efi"]]  # every architecture
    # x64 UEFI only; the others fall through to the subnet's files
    assert bodies["uefi-only"] == [UEFI_X64, ["  ", "filename", "r640/grubx64.efi"]]
    assert bodies["file-and-arm"] == [
        ["next-server", "10.0.1.7"],
        ["filename", "ipxe.efi"],
        ["if", "option", "arch", "=", "00:0b"],
        ["  ", "filename", "arm/ipxe.efi"],
    ]
    assert bodies["no-subnet-boot"] == [
        ["next-server", "10.0.2.5"],
        ["filename", "pxelinux.0"],
        UEFI_X64,
        ["  ", "filename", "grubx64.efi"],
    ]
    assert bodies["plain"] == []


def test_unsafe_boot_options_are_dropped_with_a_problem() -> None:
    bad = boot("0.0.0.0", HOSTILE, bios="ok.0", uefi_x64="a b", uefi_arm64="x" * 128)
    rows = model.Inventory(
        subnets=(subnet(1, "10.0.0.0/24", boot=bad),),
        interfaces=(interface(1, "web1", "02:00:00:00:00:01", "10.0.0.5", boot=bad),),
    )
    checked = validate.check(rows)
    assert [p.kind for p in checked.problems] == [
        "subnet_next_server_ipv4",
        *["subnet_boot_file_name"] * 3,
        "host_next_server_ipv4",
        *["host_boot_file_name"] * 3,
    ]
    assert 'boot_file_uefi_x64 "a b" is not a safe boot file name' in checked.problems[2].message
    [kept] = checked.inventory.interfaces  # the reservation stays, without the bad options
    assert kept.boot == boot(bios="ok.0") == checked.inventory.subnets[0].boot
    text = render_isc.render(checked.inventory, options=OPTIONS)
    assert "evil" not in text and '"a b"' not in text
    # nothing left at all: no boot options
    only_bad = dataclasses.replace(rows.interfaces[0], boot=boot(file="a\nb"))
    assert validate.clean_interface_boot(only_bad, []).boot is None
