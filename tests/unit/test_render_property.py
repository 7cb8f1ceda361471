"""Random inventories, hostile text in every column: whatever the database holds, both
rendered files pass the real checkers, hold exactly one reservation per valid interface,
and hold no statement or key beyond the ones the renderers write.

The set of valid interfaces is computed here a second time, naively and independently
of generator.validate, from the rules in DESIGN.md.
"""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from generator import errors, model, quote, render_isc, render_kea, render_options, validate
from tests.unit import isc_syntax
from tests.unit.conftest import Checker

pytestmark = pytest.mark.dhcpd

OPTIONS = render_options.RenderOptions()
SPACE = int(ipaddress.IPv4Address("10.0.0.0"))  # networks come from 10.0.0.0/18
SPACE_BITS = 14
V6 = ipaddress.ip_address("2001:db8::1")

HOSTILE_TEXT = [
    '"; }\nhost evil { hardware ethernet 02:00:00:00:00:99; fixed-address 10.0.0.9; }',
    '"; } subnet 10.9.0.0 netmask 255.255.0.0 { range 10.9.0.1 10.9.0.9; } #',
    "a\\",
    '\\"',
    "\0",
    "web1\0.example.com",
    "{",
    "}",
    ";",
    "\n",
    "web 1",
    "wéb1",
    "\uff57\uff45\uff42\uff11",  # full-width "web1"
    "\u212a",
    "a" * 10_240,
    "é" * 5_000,
    "a" * 64,
    ".".join(["a" * 63] * 4),
    "-web",
    "web-",
    "web..1",
    ".web",
    "web.",
    "",
    "evil,option",
]
hostile = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=30))
names = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-zA-Z0-9]{1,5}){0,2}", fullmatch=True),
    st.sampled_from(["web1", "DB-2.example.COM", "a" * 63, ".".join(["a" * 61] * 4) + ".a"]),
)


def mostly(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``good`` nine times in ten: most rows must survive for the test to mean much."""
    # Not 0 for bad: hypothesis favours the low end of a range.
    return st.integers(0, 9).flatmap(lambda n: bad if n == 9 else good)


text_or_name = mostly(names, hostile)


GOOD_FILES = ["pxelinux.0", "grubx64.efi", "EFI/BOOT/BOOTX64.EFI", "x" * 127, "{a};#b"]
BAD_FILES = ["a b", "x" * 128, 'a"b', "a'b", "a\\b", "a\tb", "grüb.efi", ""]
boot_files = st.one_of(
    st.none(), st.sampled_from(GOOD_FILES), st.sampled_from(BAD_FILES + HOSTILE_TEXT), st.text()
)
NEXT_SERVERS = ["10.0.0.5", "10.63.0.9", "0.0.0.0", "224.0.0.1", "255.255.255.255", "2001:db8::5"]


@st.composite
def boots(draw: st.DrawFn) -> model.Boot | None:
    """Boot options with good and hostile values in every column, or (often) none."""
    if draw(st.integers(0, 2)) == 0:
        return None
    server = draw(st.one_of(st.none(), st.sampled_from(NEXT_SERVERS)))
    return model.Boot(
        next_server=None if server is None else ipaddress.ip_address(server),
        file=draw(boot_files),
        file_bios=draw(boot_files),
        file_uefi_x64=draw(boot_files),
        file_uefi_arm64=draw(boot_files),
    )


@st.composite
def networks(draw: st.DrawFn) -> model.IPNetwork:
    if draw(st.integers(0, 19)) == 19:
        return ipaddress.ip_network("2001:db8::/64")
    prefix = draw(st.sampled_from([24, 22, 24, 26, 24, 28, 26, 29, 24, 30, 31, 32]))
    slot = draw(st.integers(0, 2 ** (SPACE_BITS - (32 - prefix)) - 1))
    return ipaddress.IPv4Network((SPACE + slot * 2 ** (32 - prefix), prefix))


def address_in(draw: st.DrawFn, network: model.IPNetwork) -> model.IPAddress:
    if network.version == 6:
        return V6
    last = network.num_addresses - 1
    if last >= 2 and draw(st.integers(0, 9)) < 9:  # mostly a host address
        return network.network_address + draw(st.integers(1, last - 1))
    return network.network_address + draw(st.integers(0, last))


def any_address(draw: st.DrawFn, subnets: list[model.Subnet]) -> model.IPAddress:
    choice = draw(st.integers(0, 19))
    if choice == 19:
        return V6
    if choice == 18 or not subnets:
        return ipaddress.IPv4Address(SPACE + draw(st.integers(0, 2**SPACE_BITS - 1)))
    return address_in(draw, draw(st.sampled_from(subnets)).network)


@st.composite
def subnets(draw: st.DrawFn) -> list[model.Subnet]:
    ids = draw(st.permutations(range(1, 41)))[: draw(st.integers(1, 5))]
    result: list[model.Subnet] = []
    for subnet_id in ids:
        network = draw(networks())
        pool: tuple[model.IPAddress | None, model.IPAddress | None] = (None, None)
        kind = draw(st.integers(0, 19))  # 0-9 no pool, 10-16 ordered, 17-19 broken pools
        if 10 <= kind <= 17:
            a, b = address_in(draw, network), address_in(draw, network)
            pool = (min(a, b), max(a, b)) if kind < 17 else (a, b)
        elif kind == 18:
            pool = (address_in(draw, network), None)
        elif kind == 19:
            pool = (address_in(draw, network), any_address(draw, result))
        result.append(
            model.Subnet(
                id=subnet_id,
                name=draw(text_or_name),
                network=network,
                gateway=draw(st.one_of(st.none(), st.just(address_in(draw, network)))),
                domain_name=draw(st.one_of(st.none(), text_or_name)),
                dns_servers=tuple(
                    draw(
                        st.lists(
                            st.sampled_from(
                                [
                                    ipaddress.ip_address("10.0.0.2"),
                                    ipaddress.ip_address("10.63.0.3"),
                                    V6,
                                ]
                            ),
                            max_size=3,
                        )
                    )
                ),
                pool_start=pool[0],
                pool_end=pool[1],
                lease_time=draw(st.one_of(st.none(), st.integers(-5, 2**32))),
                boot=draw(boots()),
            )
        )
    return result


def reservable_address(draw: st.DrawFn, subnets: list[model.Subnet]) -> model.IPAddress:
    """Mostly a fixed address a DHCP server may hand out; sometimes anything."""
    kept = oracle_subnets(tuple(subnets))
    if kept and draw(st.integers(0, 9)) < 7:
        s = draw(st.sampled_from(kept))
        net = s.network
        free = [
            a
            for a in net
            if a != net[0]
            and not (a == net[-1] and net.prefixlen < 31)
            and not (s.pool_start is not None and s.pool_start <= a <= s.pool_end)  # type: ignore[operator]
        ]
        if free:
            return draw(st.sampled_from(free))
    return any_address(draw, subnets)


MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "0a:1b:2c:3d:4e:5f", "52:54:00:ab:cd:ef"]
MACS += ["01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:01", "zz:00:00:00:00:00"]


@st.composite
def macs(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 19:
        return draw(hostile)
    mac = draw(st.sampled_from(MACS + [f"02:00:00:00:01:{n:02x}" for n in range(40)]))
    if draw(st.booleans()):
        mac = mac.upper()
    return mac.replace(":", "-") if draw(st.booleans()) else mac


@st.composite
def inventories(draw: st.DrawFn) -> model.Inventory:
    subnet_rows = draw(subnets())
    # A drawn count, not st.lists: lists favour very short ones, and rows must meet.
    count = draw(st.integers(1, 16))
    ids = draw(st.permutations(range(1, 101)))[:count]
    interfaces = tuple(
        model.Interface(
            id=interface_id,
            host_id=draw(st.integers(1, 5)),
            hostname=draw(mostly(names, hostile)),
            name=draw(mostly(st.sampled_from(["eth0", "eth1", "bond0.12", "ib0:1"]), hostile)),
            mac=draw(macs()),
            ip=reservable_address(draw, subnet_rows),
            boot=draw(boots()),
        )
        for interface_id in ids
    )
    return model.Inventory(subnets=tuple(subnet_rows), interfaces=interfaces)


# --- the oracle: DESIGN.md's rules, written naively --------------------------------


def oracle_hostname(text: str) -> bool:
    if not 1 <= len(text) <= 253 or not text.isascii():
        return False
    return all(
        1 <= len(label) <= 63
        and "-" not in (label[0], label[-1])
        and all(c.isalnum() or c == "-" for c in label)
        for label in text.split(".")
    )


def oracle_mac(text: str) -> str | None:
    parts = re.split(r"[:-]", text)
    if len(parts) != 6 or len(set(re.findall(r"[:-]", text))) != 1:
        return None
    if not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        return None
    octets = bytes(int(p, 16) for p in parts)
    if octets[0] & 1 or octets == bytes(6):
        return None
    return ":".join(f"{o:02x}" for o in octets)


def oracle_subnets(rows: tuple[model.Subnet, ...]) -> list[model.Subnet]:
    kept: list[model.Subnet] = []
    for s in sorted(rows, key=lambda s: s.id):
        net = s.network

        def host(a: model.IPAddress | None, net: model.IPNetwork = net) -> bool:
            return a is not None and a.version == 4 and a in net and a not in (net[0], net[-1])

        if net.version != 4 or not 0 < s.id < 2**32 - 1:
            continue
        if s.gateway is not None and not host(s.gateway):
            continue
        if (s.pool_start is None) != (s.pool_end is None):
            continue
        if s.pool_start is not None and not (
            host(s.pool_start) and host(s.pool_end) and s.pool_start <= s.pool_end  # type: ignore[operator]
        ):
            continue
        if any(net.overlaps(k.network) for k in kept):
            continue
        kept.append(s)
    return kept


def oracle_file(name: str | None) -> bool:
    return (
        name is not None
        and 1 <= len(name) <= 127
        and all("!" <= c <= "~" and c not in "\"'\\" for c in name)
    )


def oracle_boot(boot: model.Boot | None) -> dict[str, str]:
    """What a subnet or host block must say of ``boot``: its safe values, each
    architecture's file only where it differs from the plain one."""
    if boot is None:
        return {}
    found = {}
    server = boot.next_server
    if server is not None and server.version == 4 and 0 < int(server) < 0xE0000000:
        found["next-server"] = str(server)
    plain = boot.file if oracle_file(boot.file) else None
    if plain is not None:
        found["filename"] = plain
    for name, test in (
        (boot.file_bios, "00:00"),
        (boot.file_uefi_x64, "00:07 or option arch = 00:09"),
        (boot.file_uefi_arm64, "00:0b"),
    ):
        if oracle_file(name) and name != plain:
            found[f"if option arch = {test}"] = name  # type: ignore[assignment]
    return found


def oracle_boots(inventory: model.Inventory) -> dict[str, dict[str, str]]:
    """The boot statements of each kept subnet (by address) and reservation (by MAC)."""
    subnets = oracle_subnets(inventory.subnets)
    found = {str(s.network.network_address): oracle_boot(s.boot) for s in subnets}
    for mac, row in oracle_kept(inventory).items():
        found[mac] = oracle_boot(row.boot)
    return found


def oracle_reservations(inventory: model.Inventory) -> set[tuple[str, str, str]]:
    return {(mac, str(i.ip), i.hostname) for mac, i in oracle_kept(inventory).items()}


def oracle_kept(inventory: model.Inventory) -> dict[str, model.Interface]:
    """The rows that get a reservation, by canonical MAC."""
    kept = oracle_subnets(inventory.subnets)
    macs_seen: set[str] = set()
    ips_seen: set[model.IPAddress] = set()
    result: dict[str, model.Interface] = {}
    for i in sorted(inventory.interfaces, key=lambda i: i.id):
        mac = oracle_mac(i.mac)
        name_ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}", i.name) is not None
        if i.ip.version != 4 or not oracle_hostname(i.hostname) or not name_ok or mac is None:
            continue
        homes = [s for s in kept if i.ip in s.network]
        if len(homes) != 1:
            continue
        s = homes[0]
        if i.ip == s.network[0] or (i.ip == s.network[-1] and s.network.prefixlen < 31):
            continue
        if s.pool_start is not None and s.pool_start <= i.ip <= s.pool_end:  # type: ignore[operator]
            continue
        if mac in macs_seen or i.ip in ips_seen:
            continue
        macs_seen.add(mac)
        ips_seen.add(i.ip)
        result[mac] = i
    return result


# --- what each file may contain ----------------------------------------------------

ISC_GLOBAL = {
    ("option", "arch", "code", "93", "=", "unsigned", "integer", "16"),
    ("authoritative",),
    ("ddns-update-style", "none"),
    ("default-lease-time", str(OPTIONS.default_lease_time)),
    ("max-lease-time", str(OPTIONS.max_lease_time)),
}
ISC_SUBNET_HEADS = {
    ("option", "routers"),
    ("option", "domain-name-servers"),
    ("option", "domain-name"),
    ("default-lease-time",),
    ("max-lease-time",),
    ("range",),
    ("next-server",),
    ("filename",),
}
KEA_DHCP4_KEYS = {
    "authoritative", "comment", "control-socket", "host-reservation-identifiers",
    "interfaces-config", "lease-database", "max-valid-lifetime", "subnet4", "valid-lifetime",
}  # fmt: skip
KEA_SUBNET_KEYS = {
    "id", "subnet", "pools", "option-data", "reservations", "reservations-global",
    "reservations-in-subnet", "reservations-out-of-pool", "valid-lifetime",
    "min-valid-lifetime", "max-valid-lifetime", "next-server", "boot-file-name",
    "require-client-classes",
}  # fmt: skip
KEA_RESERVATION_KEYS = {"hw-address", "ip-address", "hostname"}
KEA_BOOT_KEYS = {"next-server", "boot-file-name", "client-classes"}
KEA_ARCH = {"arch0": "00:00", "arch7-9": "00:07 or option arch = 00:09", "arch11": "00:0b"}
KEA_TESTS = {
    "arch0": "option[93].hex == 0x0000",
    "arch7-9": "option[93].hex == 0x0007 or option[93].hex == 0x0009",
    "arch11": "option[93].hex == 0x000b",
}
KEA_OPTIONS = {"routers", "domain-name-servers", "domain-name"}


ARCH_TESTS = {"00:00", "00:07 or option arch = 00:09", "00:0b"}


def isc_boot(statements: list[isc_syntax.Statement]) -> dict[str, str]:
    """The boot statements of a block; fails on any other shape."""
    found: dict[str, str] = {}
    for statement in statements:
        words = statement.words
        if statement.block is not None:
            test = " ".join(words)
            assert test.startswith("if option arch = ") and test[17:] in ARCH_TESTS, test
            [inner] = statement.block
            assert inner.block is None and inner.words[0] == "filename" and len(inner.words) == 2
            found[test] = inner.words[1]
        else:
            assert words[0] in ("next-server", "filename") and len(words) == 2, words
            found[words[0]] = words[1]
    return found


def isc_reservations(
    text: str, boots: dict[str, dict[str, str]] | None = None
) -> list[tuple[str, str, str]]:
    """The (mac, ip, host-name) of every host block; fails on any unexpected statement.
    The boot statements of each subnet and host go into ``boots``."""
    found = []
    boots = {} if boots is None else boots
    for statement in isc_syntax.parse(text):
        words = tuple(statement.words)
        if statement.block is None:
            assert words in ISC_GLOBAL
        elif words[0] == "subnet":
            assert len(words) == 4 and words[2] == "netmask"
            boot = [s for s in statement.block if s.words[0] in ("next-server", "filename", "if")]
            for inner in statement.block:
                if inner not in boot:
                    assert inner.block is None
                    assert tuple(inner.words[:2]) in ISC_SUBNET_HEADS or (
                        tuple(inner.words[:1]) in ISC_SUBNET_HEADS
                    )
            boots[words[1]] = isc_boot(boot)
        else:
            assert words[0] == "host" and len(words) == 2
            body = [tuple(s.words) for s in statement.block[:3] if s.block is None]
            assert len(body) == 3
            (hw, ether, mac), (fixed, ip), (option, host_name, name) = body
            assert (hw, ether, fixed, option, host_name) == (
                "hardware", "ethernet", "fixed-address", "option", "host-name"
            )  # fmt: skip
            boots[mac] = isc_boot(statement.block[3:])
            found.append((mac, ip, name))
    return found


def kea_classes(dhcp4: dict[str, object]) -> dict[str, dict[str, object]]:
    """The boot classes by name; fails on any class of another shape."""
    classes = {}
    for entry in dhcp4.get("client-classes", []):  # type: ignore[attr-defined]
        name = entry["name"]
        match = re.fullmatch(
            r"boot-(?:host-[0-9a-f]{16}|subnet-[0-9]+)(?:-(arch[0-9-]+|other))?", name
        )
        assert match is not None, name
        if match[1] is None:
            assert entry == {"name": name} and name.startswith("boot-host-")
        else:
            assert set(entry) == {"name", "test", "only-if-required", "boot-file-name"}
            base = name[: match.start(1) - 1]
            member = f"member('{base}') and " if base.startswith("boot-host-") else ""
            if match[1] != "other":
                wanted = f"({KEA_TESTS[match[1]]})" if member else KEA_TESTS[match[1]]
                assert entry["test"] == member + wanted
            else:
                assert entry["test"].startswith(f"{member}not (")
        classes[name] = entry
    return classes


def kea_boot(
    entry: dict[str, object], classes: dict[str, dict[str, object]], own: list[str]
) -> dict[str, str]:
    """A subnet's or reservation's boot options in oracle_boot's shape."""
    found = {}
    if "next-server" in entry:
        found["next-server"] = str(entry["next-server"])
    if "boot-file-name" in entry:
        found["filename"] = str(entry["boot-file-name"])
    for name in own:
        suffix = re.sub(r".*-(arch[0-9-]+|other)$", r"\1", name)
        key = "filename" if suffix == "other" else f"if option arch = {KEA_ARCH[suffix]}"
        found[key] = str(classes[name]["boot-file-name"])
    return found


def kea_reservations(
    text: str, boots: dict[str, dict[str, str]] | None = None
) -> list[tuple[str, str, str]]:
    """The (mac, ip, hostname) of every reservation; fails on any unexpected key. The
    boot options of each subnet and reservation go into ``boots``."""
    dhcp4 = json.loads(text)["Dhcp4"]
    assert set(json.loads(text)) == {"Dhcp4"}
    assert set(dhcp4) - {"client-classes"} == KEA_DHCP4_KEYS
    classes = kea_classes(dhcp4)
    boots = {} if boots is None else boots
    found = []
    for entry in dhcp4["subnet4"]:
        assert set(entry) <= KEA_SUBNET_KEYS
        assert {option["name"] for option in entry["option-data"]} <= KEA_OPTIONS
        required = entry.get("require-client-classes", [])
        assert set(required) <= set(classes)
        own = [n for n in required if n.startswith(f"boot-subnet-{entry['id']}-")]
        boots[entry["subnet"].split("/")[0]] = kea_boot(entry, classes, own)
        for r in entry["reservations"]:
            assert KEA_RESERVATION_KEYS <= set(r) <= KEA_RESERVATION_KEYS | KEA_BOOT_KEYS
            assert ipaddress.ip_address(r["ip-address"]) in ipaddress.ip_network(entry["subnet"])
            found.append((r["hw-address"], r["ip-address"], r["hostname"]))
            mine = []
            for marker in r.get("client-classes", []):
                mine = sorted(n for n in classes if n.startswith(f"{marker}-"))
                assert set(mine) <= set(required)  # the subnet requires them
            boots[r["hw-address"]] = kea_boot(r, classes, mine)
    return found


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(inventory=inventories())
def test_any_inventory_renders_to_files_the_servers_accept(
    inventory: model.Inventory, dhcpd_check: Checker, kea_check: Checker
) -> None:
    checked = validate.check(inventory)
    expected = oracle_reservations(inventory)
    event(f"valid reservations: {min(len(expected), 4)}{'+' if len(expected) >= 4 else ''}")
    event(f"problems: {'some' if checked.problems else 'none'}")

    isc = render_isc.render(checked.inventory, options=OPTIONS)
    dhcpd_check(isc)
    isc_boots: dict[str, dict[str, str]] = {}
    isc_found = isc_reservations(isc, isc_boots)
    assert len(isc_found) == len(expected)
    assert set(isc_found) == expected
    # boot options: exactly the safe ones, as the only statements beside the known ones
    assert isc_boots == oracle_boots(inventory)
    event(f"boot statements: {'some' if any(isc_boots.values()) else 'none'}")

    kea = render_kea.render(checked.inventory, options=OPTIONS)
    kea_check(kea)
    kea_boots: dict[str, dict[str, str]] = {}
    kea_found = kea_reservations(kea, kea_boots)
    assert len(kea_found) == len(expected)
    assert set(kea_found) == expected
    assert kea_boots == isc_boots  # the same options, the same precedence

    # Every skipped interface is named by exactly one problem, a kept one by none.
    kept = {i.id for i in checked.inventory.interfaces}
    named = [
        int(p.row.split()[1])
        for p in checked.problems
        if p.row.startswith("interface ")
        and "_boot_file_name" not in p.kind
        and "_next_server_" not in p.kind
    ]
    assert sorted(named) == sorted(i.id for i in inventory.interfaces if i.id not in kept)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=80)))
def test_any_text_quoted_for_dhcpd_stays_one_string(text: str, dhcpd_check: Checker) -> None:
    # Defence in depth: validate never lets such text through, and quoting alone holds it.
    try:
        literal = quote.isc_string(text)
    except errors.UnsafeValue:
        assert len(text.encode("utf-8")) > quote.MAX_STRING_BYTES
        return
    conf = f"subnet 10.0.0.0 netmask 255.255.255.0 {{\n  option domain-name {literal};\n}}\n"
    dhcpd_check(conf)
    [statement] = isc_syntax.parse(conf)
    assert [s.words for s in statement.block or []] == [
        ["option", "domain-name", text.encode("utf-8").decode("latin-1")]
    ]
