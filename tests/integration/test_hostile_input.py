"""Hostile values, written through plain SQL as an application would (bound parameters):
each is either refused with a clear error or, where the database accepts it, rendered
safely. Legacy rows that predate a rule are skipped and named, never rendered.

``test_hostile_text_in_every_column_renders_safely`` (hypothesis, real database) puts
hostile text in every text column, free text included (host.description, hardware_type
name/vendor/model, service.name, subnet.name); both rendered files must pass the real
``dhcpd -t`` and ``kea-dhcp4 -t``, hold exactly the reservations the rows call for,
and hold no free text at all."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import errors

from generator import model, read, render, syntax_check, validate
from tests.conftest import require
from tests.integration import test_generator_golden as golden
from tests.integration.inventory import seed, snapshot
from tests.unit import test_render_property as prop

pytestmark = pytest.mark.pg

HOSTILE_TEXT = {
    "double quote": 'web"1',
    "single quote": "web'1",
    "closing brace": "web1; }",
    "opening brace": "host evil {",
    "semicolon": "a;b",
    "newline directive": "web1\nhost evil { hardware ethernet 52:54:00:66:66:66; }",
    "backslash": "web\\1",
    "non-ascii": "wéb1",
    "emoji": "web\N{PILE OF POO}",
    "sql injection": "x'); DROP TABLE host; --",
    "config injection": 'x"; } host evil { fixed-address 10.20.0.66; } #',
    "10 kB": "a" * 10_240,
    "empty": "",
    "space": "web 1",
}

# Columns the pipeline renders: hostile text must be refused.
RENDERED_TEXT_COLUMNS = {
    "host.hostname": ("INSERT INTO host (hostname) VALUES (%s)", "RFC 1123"),
    "interface.name": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, %s, '52:54:00:00:09:09')",
        "interface_name_safe",
    ),
    "subnet.domain_name": (
        "INSERT INTO subnet (name, network, domain_name) VALUES ('dmz', '10.30.0.0/24', %s)",
        "subnet_domain_name_rfc1123",
    ),
}


@pytest.mark.parametrize("value_name", sorted(HOSTILE_TEXT))
@pytest.mark.parametrize("column", sorted(RENDERED_TEXT_COLUMNS))
def test_hostile_text_in_rendered_columns_is_refused(
    db: psycopg.Connection[Any], column: str, value_name: str
) -> None:
    statement, rule = RENDERED_TEXT_COLUMNS[column]
    value = HOSTILE_TEXT[value_name]
    if column == "subnet.domain_name" and value == "":
        rule = "subnet_domain_name_rfc1123"
    seed(db)
    before = snapshot(db)
    with pytest.raises(errors.CheckViolation) as raised:
        db.execute(statement, [value])  # type: ignore[arg-type]
    assert rule in str(raised.value)
    assert snapshot(db) == before


def test_nul_byte_is_refused_by_postgresql(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(errors.DataError):
        db.execute("INSERT INTO host (hostname) VALUES (%s)", ["web\x00evil"])


TEXT_COLUMNS = {
    "host.hostname": "INSERT INTO host (hostname) VALUES (%s)",
    "host.description": "INSERT INTO host (hostname, description) VALUES ('nul1', %s)",
    "hardware_type.name": "INSERT INTO hardware_type (name) VALUES (%s)",
    "hardware_type.vendor": "INSERT INTO hardware_type (name, vendor) VALUES ('nul', %s)",
    "hardware_type.model": "INSERT INTO hardware_type (name, model) VALUES ('nul', %s)",
    "service.name": "INSERT INTO service (name) VALUES (%s)",
    "subnet.name": "INSERT INTO subnet (name, network) VALUES (%s, '10.30.0.0/24')",
    "subnet.domain_name": (
        "INSERT INTO subnet (name, network, domain_name) VALUES ('nul', '10.30.0.0/24', %s)"
    ),
    "interface.name": (
        "INSERT INTO interface (host_id, name, mac) VALUES (2, %s, '52:54:00:00:09:09')"
    ),
}


@pytest.mark.parametrize("column", sorted(TEXT_COLUMNS))
def test_nul_byte_is_refused_in_every_text_column(db: psycopg.Connection[Any], column: str) -> None:
    seed(db)
    before = snapshot(db)
    with pytest.raises(errors.DataError, match="NUL"):
        db.execute(TEXT_COLUMNS[column], ['evil\x00"; } host evil {'])  # type: ignore[arg-type]
    assert snapshot(db) == before


BAD_TYPED_VALUES = {
    "mac too long": ("INSERT INTO interface (host_id, mac) VALUES (2, %s)", "52:54:00:00:00:00:01"),
    "mac with injection": (
        "INSERT INTO interface (host_id, mac) VALUES (2, %s)",
        "52:54:00:00:00:0; }",
    ),
    "ip garbage": (
        "INSERT INTO interface (host_id, mac, ip) VALUES (2, '52:54:00:00:09:01', %s)",
        "10.20.0.1; }",
    ),
    "ip octet overflow": (
        "INSERT INTO interface (host_id, mac, ip) VALUES (2, '52:54:00:00:09:01', %s)",
        "10.20.0.256",
    ),
    "network garbage": ("INSERT INTO subnet (name, network) VALUES ('x', %s)", "10.30.0.0/24 { }"),
    "network host bits": ("INSERT INTO subnet (name, network) VALUES ('x', %s)", "10.30.0.1/24"),
    "dns injection": (
        "INSERT INTO subnet (name, network, dns_servers) VALUES ('x', '10.30.0.0/24', %s)",
        "{10.30.0.2;evil}",
    ),
    "lease time text": (
        "INSERT INTO subnet (name, network, lease_time) VALUES ('x', '10.30.0.0/24', %s)",
        "3600; }",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TYPED_VALUES))
def test_malformed_typed_values_are_refused_by_their_type(
    db: psycopg.Connection[Any], case: str
) -> None:
    statement, value = BAD_TYPED_VALUES[case]
    seed(db)
    before = snapshot(db)
    with pytest.raises(
        (errors.InvalidTextRepresentation, errors.InvalidParameterValue, errors.DataError)
    ):
        db.execute(statement, [value])  # type: ignore[arg-type]
    assert snapshot(db) == before


def _have_dhcpd() -> bool:
    return Path("/usr/sbin/dhcpd").exists()


def render_once(db_url: str, output: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("STOMP_URL", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "generator.cli",
            "--once",
            "--output",
            str(output),
            "--reload-command",
            "true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_free_text_columns_accept_anything_and_never_reach_the_config(
    db_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    require(_have_dhcpd(), "ISC dhcpd")
    seed(db)
    for value in HOSTILE_TEXT.values():
        db.execute(
            "INSERT INTO hardware_type (name, vendor, model) VALUES (%s, %s, %s)",
            [f"hw-{len(value)}-{hash(value)}", value, value],
        )
        db.execute("UPDATE host SET description = %s WHERE id = 1", [value])
    output = tmp_path / "dhcpd.conf"
    result = render_once(db_url, output)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "evil" not in text and "DROP" not in text
    check = subprocess.run(
        ["/usr/sbin/dhcpd", "-4", "-t", "-cf", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert text.count("\nhost ") == 3


def test_legacy_rows_that_predate_a_rule_are_skipped_and_named(
    db_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Rows written before the rules existed (simulated by switching the rules off)."""
    require(_have_dhcpd(), "ISC dhcpd")
    seed(db)
    db.execute("ALTER TABLE host DISABLE TRIGGER host_check")
    db.execute("ALTER TABLE host DROP CONSTRAINT host_hostname_rfc1123")
    db.execute("ALTER TABLE interface DISABLE TRIGGER interface_check")
    db.execute("INSERT INTO host (id, hostname) VALUES (50, %s)", ['evil"; } host pwned { #'])
    db.execute(
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (50, 'eth0', '52:54:00:00:50:50', '10.20.0.50')"
    )
    db.execute(
        "INSERT INTO interface (host_id, name, mac, ip) VALUES (2, 'eth9', '52:54:00:00:50:51', '10.20.0.150')"
    )
    output = tmp_path / "dhcpd.conf"
    result = render_once(db_url, output)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "pwned" not in text and "52:54:00:00:50:50" not in text
    assert (
        "10.20.0.150" not in text.split("range")[-1].split("host ", 1)[-1]
    )  # not reserved inside the pool
    assert "52:54:00:00:50:51" not in text
    assert text.count("\nhost ") == 3  # the three valid reservations remain
    # each skipped row is named with the rule it breaks
    assert "interface 4 " in result.stderr and "host_hostname_rfc1123" in result.stderr
    assert "interface 5 " in result.stderr and "dynamic pool" in result.stderr


# --- hostile text in every text column, end to end --------------------------------
#
# Hypothesis writes hostile text through plain SQL into every text column the schema
# has, renders both formats in-process from the real database (read -> validate ->
# render, as ``--once`` does), and checks the result with the real servers. A column
# with a rule must refuse bad text cleanly (nothing changed) and then gets a valid
# value; a free-text column must accept anything and never reach the config.

MARK = "mdbx"  # in every sampled hostile string: found anywhere in a config, text leaked
HOSTILE_SAMPLES = [
    f'"; }} host evil-{MARK} {{ hardware ethernet 52:54:00:66:66:66; fixed-address 10.50.0.66; }}',
    f'{MARK}"; }}\nsubnet 10.9.0.0 netmask 255.255.0.0 {{ range 10.9.0.1 10.9.0.9; }} #',
    f'{MARK}", "ip-address": "10.50.0.66", "hw-address": "52:54:00:66:66:66',
    f"{MARK}\\",
    f'\\"{MARK}',
    f"{MARK}\n}}\n{{",
    f"# {MARK}",
    f"{MARK};",
    f"{{{MARK}}}",
    f"{MARK}'); DROP TABLE host; --",
    f"wéb-{MARK}",
    f"日本語 🦊 {MARK}",
    f"{MARK}\r\n\t\b\f\v\x7f\x01",
    f"{MARK},option",
    f"\u202e{MARK}",  # right-to-left override
    f"\\x41\\101\\n {MARK}",
    f"{MARK}" + "a" * 10_240,
    "é" * 3_000 + MARK,
    # past btree's key limit even compressed (a name of it is refused as too long)
    MARK + "".join(random.Random(1).choices([chr(c) for c in range(0x20, 0x2000)], k=3_000)),
]
TEXT_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")  # PG text holds no NUL
free_text = st.one_of(st.sampled_from(HOSTILE_SAMPLES), st.text(TEXT_CHARS, max_size=40))
optional_text = st.one_of(st.none(), free_text)

RFC1123 = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
INTERFACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}")
LONGEST_NAME = ".".join(["b" * 63] * 3) + "." + "c" * 61  # 253 characters
BAD_NAMES = [
    *HOSTILE_SAMPLES,
    *HOSTILE_TEXT.values(),
    "-web",
    "web-",
    "web..1",
    ".web",
    "web.",
    "web1\n",
    "\u212a",  # Kelvin sign: lower()s to an ASCII k
    "a" * 64,
    LONGEST_NAME + "d",
]
valid_names = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[A-Za-z0-9]{1,6}){0,2}", fullmatch=True),
    st.sampled_from(["WEB1", "123", "a", "a" * 63, LONGEST_NAME, "x-y.Example.COM"]),
).filter(lambda name: MARK not in name.lower())
bad_names = st.one_of(st.sampled_from(BAD_NAMES), st.text(TEXT_CHARS, max_size=20))


def mostly(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``bad`` one time in three: most rows must be written for the test to mean much."""
    return st.integers(0, 2).flatmap(lambda n: bad if n == 2 else good)


hostnames = mostly(valid_names, bad_names)
interface_names = mostly(
    st.sampled_from(["eth0", "eth1", "ipmi", "bond0.12", "ib0:1", "en_p1s0", "X" * 32]),
    st.one_of(
        st.sampled_from(
            [*HOSTILE_SAMPLES, "", "eth 0", "-eth0", "eth0\n", "e" * 33, 'eth0"', "éth0", "eth0;"]
        ),
        st.text(TEXT_CHARS, max_size=20),
    ),
)
subnet_names = mostly(st.from_regex(r"[a-z][a-z0-9 _.-]{0,20}", fullmatch=True), free_text)
domain_names = st.one_of(st.none(), mostly(valid_names, bad_names))

# Three subnets with fixed addresses: the hostile part is the text. The third one's
# dhcp_enabled is drawn. Reservable addresses avoid network, broadcast and pools.
SUBNETS = [
    (1, "10.50.0.0/24", "10.50.0.1", "{10.50.0.2}", "10.50.0.100", "10.50.0.199", 3600),
    (2, "10.51.0.0/25", None, "{}", None, None, None),
    (3, "10.52.0.0/24", "10.52.0.1", "{10.52.0.2}", "10.52.0.10", "10.52.0.20", 600),
]
ADDRESSES = [f"10.50.0.{n}" for n in range(10, 30)]
ADDRESSES += [f"10.51.0.{n}" for n in range(1, 11)] + [f"10.52.0.{n}" for n in range(30, 50)]
RESET = """
TRUNCATE host_service, interface, host, service, hardware_type, subnet RESTART IDENTITY CASCADE;
DELETE FROM cdc.change;
"""
NEUTRAL_TEXT = """
UPDATE host SET description = NULL;
UPDATE hardware_type SET name = 'hw' || id, vendor = NULL, model = NULL;
UPDATE service SET name = 'svc' || id;
UPDATE subnet SET name = 'net' || id;
UPDATE interface SET name = 'if' || id;
"""


class Writer:
    """Inserts rows, checking that the database accepts exactly what its rules allow."""

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self.db = db
        self.refused = 0

    def insert(
        self, statement: str, params: list[Any], *, valid: bool | None, rule: str | None = None
    ) -> int | None:
        """Run ``statement`` (an INSERT ... RETURNING id); None if it was refused.

        ``valid``: True if the rules allow the row (it must be written), False if they
        forbid it (it must be refused, by ``rule`` when given), None if either is right
        (where the locale decides, say)."""
        before = snapshot(self.db)
        try:
            row = self.db.execute(statement, params).fetchone()  # type: ignore[arg-type]
        except errors.IntegrityError as exc:
            assert valid is not True, f"refused a valid row {params!r}: {exc}"
            assert exc.diag.constraint_name, f"no rule named: {exc}"
            if rule is not None:
                assert exc.diag.constraint_name == rule, str(exc)
            if isinstance(exc, errors.CheckViolation):  # the trigger's message
                assert f"[rule {exc.diag.constraint_name}]" in str(exc)
            assert snapshot(self.db) == before, "a refused row changed the database"
            self.refused += 1
            return None
        assert valid is not False, f"accepted a row the rules forbid: {params!r}"
        assert row is not None
        return int(row[0])

    def stored(self, table: str, columns: str, row_id: int) -> Any:
        """The row as the database holds it: the text must come back unchanged."""
        return self.db.execute(f"SELECT {columns} FROM {table} WHERE id = %s", [row_id]).fetchone()


def _unique_name(table: str, text: str, used: set[str]) -> tuple[bool, str]:
    """A name column takes any new text of up to 255 characters; the rule it breaks."""
    if len(text) > 255:
        return False, f"{table}_name_length"
    return text not in used, f"{table}_name_key"


def _rfc1123(name: str) -> bool:
    return len(name) <= 253 and RFC1123.fullmatch(name) is not None


def _printable_subnet_name(name: str) -> bool | None:
    """True/False where DESIGN's subnet name rule decides for sure, None where it is
    up to the locale ([[:print:]] beyond ASCII)."""
    if not 1 <= len(name) <= 100 or any(c in name for c in '"\\{};'):
        return False
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return False
    return True if name.isascii() else None


BOOT_COLUMNS = ("boot_file", "boot_file_bios", "boot_file_uefi_x64", "boot_file_uefi_arm64")
GOOD_BOOT_FILES = ["pxelinux.0", "grubx64.efi", "EFI/BOOT/BOOTX64.EFI", "x" * 127, "{a};#b"]
boot_files = st.one_of(st.none(), st.sampled_from(GOOD_BOOT_FILES), free_text)
NEXT_SERVERS = ["10.50.0.5", "192.0.2.7", "0.0.0.0", "224.0.0.9", "255.255.255.255", "2001:db8::5"]


def _boot_file_ok(name: str) -> bool:
    return 1 <= len(name) <= 127 and all("!" <= c <= "~" and c not in "\"'\\" for c in name)


def write_boot_options(data: st.DataObject, writer: Writer, table: str, row: int) -> None:
    """Boot options of one row, column by column: refused exactly where the rules say."""
    server = data.draw(st.one_of(st.none(), st.sampled_from(NEXT_SERVERS)), label="next server")
    if server is not None:
        address = ipaddress.ip_address(server)
        valid = address.version == 4 and 0 < int(address) < 0xE0000000
        writer.insert(
            f"UPDATE {table} SET next_server = %s WHERE id = %s RETURNING id",
            [server, row],
            valid=valid,
            rule=f"{table}_next_server_ipv4",
        )
    for column in BOOT_COLUMNS:
        name = data.draw(boot_files, label=column)
        if name is None:
            continue
        if _boot_file_ok(name):
            name = name.lower().replace(MARK, "ok")  # a safe name is rendered: no marker
        writer.insert(
            f"UPDATE {table} SET {column} = %s WHERE id = %s RETURNING id",
            [name, row],
            valid=_boot_file_ok(name),
            rule=f"{table}_boot_file_name",
        )


def write_inventory(data: st.DataObject, writer: Writer) -> None:
    """Hostile text in every text column; typed columns valid, so rows meet."""
    hardware: list[int] = []
    hardware_names: set[str] = set()
    for _ in range(data.draw(st.integers(1, 3), label="hardware types")):
        name = data.draw(free_text)
        values = [name, data.draw(optional_text), data.draw(optional_text)]
        valid, rule = _unique_name("hardware_type", name, hardware_names)
        row = writer.insert(
            "INSERT INTO hardware_type (name, vendor, model) VALUES (%s, %s, %s) RETURNING id",
            values,
            valid=valid,
            rule=rule,
        )
        if row is not None:
            assert writer.stored("hardware_type", "name, vendor, model", row) == tuple(values)
            write_boot_options(data, writer, "hardware_type", row)
            hardware.append(row)
            hardware_names.add(name)
    services: list[int] = []
    service_names: set[str] = set()
    for _ in range(data.draw(st.integers(1, 3), label="services")):
        name = data.draw(free_text)
        valid, rule = _unique_name("service", name, service_names)
        row = writer.insert(
            "INSERT INTO service (name) VALUES (%s) RETURNING id",
            [name],
            valid=valid,
            rule=rule,
        )
        if row is not None:
            assert writer.stored("service", "name", row) == (name,)
            services.append(row)
            service_names.add(name)

    subnet_names_used: set[str] = set()
    dhcp_on_3 = data.draw(st.booleans(), label="subnet 3 dhcp_enabled")
    statement = (
        "INSERT INTO subnet (name, domain_name, id, network, gateway, dns_servers,"
        " pool_start, pool_end, lease_time, dhcp_enabled)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
    )
    for subnet_id, *typed in SUBNETS:
        typed_params = [subnet_id, *typed, subnet_id != 3 or dhcp_on_3]
        name = data.draw(subnet_names, label="subnet name")
        domain = data.draw(domain_names, label="domain name")
        name_rule = _printable_subnet_name(name)
        valid: bool | None = name_rule and name not in subnet_names_used
        # The trigger checks the name, then the domain name; the unique index comes last.
        rule = {True: "subnet_name_key", False: "subnet_name_printable", None: None}[name_rule]
        if domain is not None and not _rfc1123(domain):
            valid = False
            if name_rule is True:
                rule = "subnet_domain_name_rfc1123"
        params = [name, domain, *typed_params]
        if writer.insert(statement, params, valid=valid, rule=rule) is None:
            name = f"Fallback #{subnet_id}"  # never one subnet_names draws
            domain = domain if domain is not None and _rfc1123(domain) else None
            writer.insert(statement, [name, domain, *typed_params], valid=True)
        subnet_names_used.add(name)
        write_boot_options(data, writer, "subnet", subnet_id)

    hostnames_used: set[str] = set()
    addresses = list(ADDRESSES)
    for number in range(data.draw(st.integers(2, 6), label="hosts")):
        hostname = data.draw(hostnames, label="hostname")
        params = [
            hostname,
            data.draw(st.integers(0, 4), label="enabled") < 4,
            data.draw(optional_text, label="description"),
            data.draw(st.sampled_from([None, *hardware]), label="hardware type"),
        ]
        statement = (
            "INSERT INTO host (hostname, enabled, description, hardware_type_id)"
            " VALUES (%s, %s, %s, %s) RETURNING id"
        )
        valid = _rfc1123(hostname) and hostname.lower() not in hostnames_used
        rule = "host_hostname_lower_key" if _rfc1123(hostname) else "host_hostname_rfc1123"
        host = writer.insert(statement, params, valid=valid, rule=rule)
        if host is None:
            params[0] = hostname = f"zz--fallback-{number}"  # never one valid_names draws
            host = writer.insert(statement, params, valid=True)
        assert host is not None
        assert writer.stored("host", "hostname, description", host) == (hostname, params[2])
        hostnames_used.add(hostname.lower())
        write_boot_options(data, writer, "host", host)
        for service in data.draw(st.sets(st.sampled_from(services)) if services else st.just(())):
            writer.insert(
                "INSERT INTO host_service VALUES (%s, %s) RETURNING host_id",
                [host, service],
                valid=True,
            )
        interface_names_used: set[str] = set()
        for _ in range(data.draw(st.integers(1, 3), label="interfaces")):
            name = data.draw(interface_names, label="interface name")
            ip = None
            if addresses and data.draw(st.integers(0, 4), label="has ip") < 4:
                ip = data.draw(st.sampled_from(addresses), label="ip")
                addresses.remove(ip)
            mac = f"52:54:00:50:{host:02x}:{len(interface_names_used):02x}"
            statement = "INSERT INTO interface (host_id, name, mac, ip) VALUES (%s, %s, %s, %s) RETURNING id"
            safe = INTERFACE_NAME.fullmatch(name) is not None
            valid = safe and name not in interface_names_used
            rule = "interface_host_id_name_key" if safe else "interface_name_safe"
            if writer.insert(statement, [host, name, mac, ip], valid=valid, rule=rule) is None:
                name = f"fb{len(interface_names_used)}"
                writer.insert(statement, [host, name, mac, ip], valid=True)
            interface_names_used.add(name)


def expected_reservations(db: psycopg.Connection[Any]) -> set[tuple[str, str, str]]:
    """DESIGN.md's rule on the raw rows: an address, an enabled host, a DHCP subnet."""
    subnets = [
        (ipaddress.ip_network(network), enabled)
        for network, enabled in db.execute("SELECT network::text, dhcp_enabled FROM subnet")
    ]
    rows = db.execute(
        "SELECT i.mac::text, host(i.ip), h.hostname, h.enabled"
        " FROM interface i JOIN host h ON h.id = i.host_id"
    ).fetchall()
    expected = set()
    for mac, ip, hostname, enabled in rows:
        if ip is None or not enabled:
            continue
        homes = [on for network, on in subnets if ipaddress.ip_address(ip) in network]
        if homes == [True]:
            expected.add((mac, ip, hostname))
    return expected


def _boot_of(row: tuple[Any, ...]) -> model.Boot:
    server, *files = row
    return model.Boot(
        next_server=None if server is None else ipaddress.ip_address(server),
        file=files[0],
        file_bios=files[1],
        file_uefi_x64=files[2],
        file_uefi_arm64=files[3],
    )


def expected_boots(db: psycopg.Connection[Any]) -> dict[str, dict[str, str]]:
    """The boot statements each DHCP subnet (by address) and each reservation (by MAC)
    must have, from the raw rows: host over hardware type, per architecture."""
    columns = "host(next_server), " + ", ".join(BOOT_COLUMNS)
    found = {}
    for network, *boot in db.execute(
        f"SELECT host(network), {columns} FROM subnet WHERE dhcp_enabled"
    ).fetchall():
        found[network] = prop.oracle_boot(_boot_of(tuple(boot)))
    reserved = {mac for mac, _, _ in expected_reservations(db)}
    own = ", ".join(f"h.{c}" for c in ("next_server", *BOOT_COLUMNS))
    kind = ", ".join(f"t.{c}" for c in ("next_server", *BOOT_COLUMNS))
    rows = db.execute(
        f"SELECT i.mac::text, {own}, {kind} FROM interface i JOIN host h ON h.id = i.host_id"
        " LEFT JOIN hardware_type t ON t.id = h.hardware_type_id"
    ).fetchall()
    for mac, *values in rows:
        if mac not in reserved:
            continue
        host, hw = values[:5], values[5:]

        def first(*candidates: Any) -> Any:
            return next((c for c in candidates if c is not None), None)

        resolved = [first(host[0], hw[0]), first(host[1], hw[1])]
        for index in (2, 3, 4):  # an architecture: its own file, else the level's boot file
            resolved.append(first(host[index], host[1], hw[index], hw[1]))
        server = resolved[0]
        resolved[0] = None if server is None else str(ipaddress.ip_interface(server).ip)
        found[mac] = prop.oracle_boot(_boot_of(tuple(resolved)))
    return found


def render_both(engine: sqlalchemy.Engine) -> tuple[str, str]:
    checked = validate.check(read.read_inventory(engine))
    assert checked.problems == ()  # the database let no row through that validate skips
    return render.render(checked.inventory, fmt="isc"), render.render(checked.inventory, fmt="kea")


@pytest.fixture
def engine(db_url: str) -> Iterator[sqlalchemy.Engine]:
    require(syntax_check.find_binary("dhcpd") is not None, "ISC dhcpd")
    require(syntax_check.find_binary("kea-dhcp4") is not None, "kea-dhcp4")
    made = read.make_engine(db_url)
    yield made
    made.dispose()


@pytest.mark.dhcpd
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the database is reset by each example
    ],
)
@given(data=st.data())
def test_hostile_text_in_every_column_renders_safely(
    data: st.DataObject, db: psycopg.Connection[Any], engine: sqlalchemy.Engine, tmp_path: Path
) -> None:
    db.execute(RESET)
    writer = Writer(db)
    write_inventory(data, writer)
    expected = expected_reservations(db)
    event(f"reservations: {min(len(expected), 5)}{'+' if len(expected) >= 5 else ''}")
    event(f"rows refused: {min(writer.refused, 3)}{'+' if writer.refused >= 3 else ''}")
    isc, kea = render_both(engine)

    # Both real servers accept the files.
    (tmp_path / "dhcpd.conf").write_text(isc, encoding="utf-8")
    (tmp_path / "kea.json").write_text(kea, encoding="utf-8")
    for checked in (
        golden.dhcpd_check(tmp_path / "dhcpd.conf"),
        golden.kea_check(tmp_path / "kea.json"),
    ):
        assert checked.returncode == 0, checked.stdout + checked.stderr

    # Exactly the expected reservations, and no statement or key the renderers do not write.
    isc_found, kea_found = prop.isc_reservations(isc), prop.kea_reservations(kea)
    assert len(isc_found) == len(kea_found) == len(expected)
    assert set(isc_found) == set(kea_found) == expected
    # Boot options: in the host or subnet block the precedence gives, and nothing else.
    isc_boots: dict[str, dict[str, str]] = {}
    kea_boots: dict[str, dict[str, str]] = {}
    prop.isc_reservations(isc, isc_boots)
    prop.kea_reservations(kea, kea_boots)
    assert isc_boots == kea_boots == expected_boots(db)
    event(f"boot statements: {'some' if any(isc_boots.values()) else 'none'}")

    # Text that belongs in the config is there, quoted; other text is not there at all.
    assert MARK not in isc.lower() and MARK not in kea.lower()
    for mac, _, hostname in expected:
        assert f"\nhost {hostname.lower()}-{mac.replace(':', '-')} {{\n" in isc
        assert f'\n  option host-name "{hostname}";\n' in isc
    kea_subnets = {s["id"]: s for s in json.loads(kea)["Dhcp4"]["subnet4"]}
    rows = db.execute("SELECT id, domain_name, dhcp_enabled FROM subnet ORDER BY id").fetchall()
    for subnet_id, domain, enabled in rows:
        if not enabled:
            assert subnet_id not in kea_subnets and "10.52.0." not in isc
            continue
        kea_domain = [
            o["data"] for o in kea_subnets[subnet_id]["option-data"] if o["name"] == "domain-name"
        ]
        assert kea_domain == ([domain] if domain else [])
        if domain:
            assert f'\n  option domain-name "{domain}";\n' in isc

    # Free text changes nothing: the same rows with neutral text render the same bytes.
    db.execute(NEUTRAL_TEXT)
    assert render_both(engine) == (isc, kea)
