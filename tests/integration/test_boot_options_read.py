"""Boot options from a real database: the reader resolves host over hardware type per
architecture, every read (whole, scoped, by row) gives the same, and the rendered files
for every precedence case equal their golden files and pass the real checkers."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy

from generator import model, read, render, validate
from tests.integration import test_generator_golden as golden

pytestmark = [pytest.mark.pg, pytest.mark.dhcpd]

# Subnet pxe sets a server, a file and an x64 UEFI file; subnet plain sets nothing.
# Hardware type uefi-box sets an x64 UEFI file only; installer a server, a file and a
# BIOS file. Each host shows one precedence case (see EXPECTED).
SEED = """
INSERT INTO subnet (id, name, network, pool_start, pool_end,
                    next_server, boot_file, boot_file_uefi_x64) VALUES
    (1, 'pxe', '10.60.0.0/24', '10.60.0.100', '10.60.0.200',
        '10.60.0.5', 'pxelinux.0', 'grubx64.efi');
INSERT INTO subnet (id, name, network) VALUES (2, 'plain', '10.61.0.0/24');
INSERT INTO hardware_type (id, name, boot_file_uefi_x64) VALUES (1, 'uefi-box', 'hw/grubx64.efi');
INSERT INTO hardware_type (id, name, next_server, boot_file, boot_file_bios)
VALUES (2, 'installer', '10.60.0.6', 'hw/install.0', 'hw/bios.0');
INSERT INTO host (id, hostname, hardware_type_id, next_server, boot_file, boot_file_uefi_x64,
                  boot_file_uefi_arm64) VALUES
    (1, 'inherits', NULL, NULL, NULL, NULL, NULL),
    (2, 'typed', 1, NULL, NULL, NULL, NULL),
    (3, 'typed-own-file', 1, NULL, 'h3.efi', NULL, NULL),
    (4, 'installer', 2, NULL, NULL, NULL, NULL),
    (5, 'installer-own', 2, '10.60.0.7', NULL, 'h5/grubx64.efi', NULL),
    (6, 'own-arm', NULL, NULL, NULL, NULL, 'h6/grubaa64.efi'),
    (7, 'plain-typed', 1, NULL, NULL, NULL, NULL);
INSERT INTO interface (id, host_id, mac, ip) VALUES
    (1, 1, '02:00:00:00:60:01', '10.60.0.11'), (2, 2, '02:00:00:00:60:02', '10.60.0.12'),
    (3, 3, '02:00:00:00:60:03', '10.60.0.13'), (4, 4, '02:00:00:00:60:04', '10.60.0.14'),
    (5, 5, '02:00:00:00:60:05', '10.60.0.15'), (6, 6, '02:00:00:00:60:06', '10.60.0.16'),
    (7, 7, '02:00:00:00:61:07', '10.61.0.17');
INSERT INTO dhcp_server (id, name) VALUES (1, 'pxe-dhcp');
INSERT INTO dhcp_server_subnet VALUES (1, 1), (1, 2);
"""


def boot(
    next_server: str | None = None,
    file: str | None = None,
    bios: str | None = None,
    x64: str | None = None,
    arm64: str | None = None,
) -> model.Boot:
    return model.Boot(
        next_server=None if next_server is None else ipaddress.IPv4Address(next_server),
        file=file,
        file_bios=bios,
        file_uefi_x64=x64,
        file_uefi_arm64=arm64,
    )


EXPECTED = {
    "inherits": None,  # the subnet's options
    "typed": boot(x64="hw/grubx64.efi"),  # x64 UEFI from its type, the rest from the subnet
    "typed-own-file": boot(None, "h3.efi", "h3.efi", "h3.efi", "h3.efi"),  # host over type
    "installer": boot("10.60.0.6", "hw/install.0", "hw/bios.0", "hw/install.0", "hw/install.0"),
    "installer-own": boot(
        "10.60.0.7", "hw/install.0", "hw/bios.0", "h5/grubx64.efi", "hw/install.0"
    ),
    "own-arm": boot(arm64="h6/grubaa64.efi"),
    "plain-typed": boot(x64="hw/grubx64.efi"),
}


@pytest.fixture
def engine(db: psycopg.Connection[Any], db_url: str) -> Iterator[sqlalchemy.Engine]:
    db.execute(SEED)
    made = read.make_engine(db_url)
    yield made
    made.dispose()


def boots(interfaces: tuple[model.Interface, ...]) -> dict[str, model.Boot | None]:
    return {i.hostname: i.boot for i in interfaces}


def test_every_read_resolves_host_over_hardware_type(engine: sqlalchemy.Engine) -> None:
    inventory = read.read_inventory(engine)
    assert boots(inventory.interfaces) == EXPECTED
    assert {s.name: s.boot for s in inventory.subnets} == {
        "pxe": boot("10.60.0.5", "pxelinux.0", x64="grubx64.efi"),
        "plain": None,
    }
    scoped = read.read_inventory(engine, server=1)
    assert scoped == inventory
    for server in (None, 1):
        named = read.read_named(engine, host_ids=range(1, 8), server=server)
        assert boots(named.wanted) == EXPECTED


@pytest.mark.parametrize("fmt", ["isc", "kea"])
def test_every_precedence_case_matches_golden(
    engine: sqlalchemy.Engine, fmt: render.Format, tmp_path: Path
) -> None:
    checked = validate.check(read.read_inventory(engine))
    assert checked.problems == ()
    text = render.render(checked.inventory, fmt=fmt)
    name = {"isc": "boot_options.conf", "kea": "boot_options.json"}[fmt]
    golden.assert_golden(name, text)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = golden.dhcpd_check(path) if fmt == "isc" else golden.kea_check(path)
    assert result.returncode == 0, result.stdout + result.stderr
