"""End to end: PXE boot options written with psql reach a booting x64 UEFI client.

PostgreSQL -> triggers -> outbox -> cdc-relay -> ActiveMQ -> dhcp-generator --omapi ->
dhcpd.conf and the running dhcpd (OMAPI) -> a busybox udhcpc that says it is an x64
UEFI machine (option 93 = 7) and records the next server and boot file it is given.

The client gets the subnet's boot file; after its hardware type gets an x64 UEFI file,
that file (the host block changes: over OMAPI, no restart); after its host gets a boot
file and next server of its own, those (over OMAPI, no restart). The subnet's own change
goes through the file and a restart. The pipeline is test_omapi_pipeline's ``lab``.
With Kea (inline reservations, config-reload) the client follows the same steps: the
hardware type's UEFI file reaches it through the reservation's class and option 93.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.e2e import configs, netns, pipeline
from tests.e2e.conftest import new_mac
from tests.e2e.test_dhcp_client import (  # noqa: F401  (fixtures)
    commands,
    relay,
    start_generator,
    wait_for_file,
)
from tests.e2e.test_omapi_pipeline import Lab, lab, seed  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.netns, pytest.mark.dhcpd, pytest.mark.pg, pytest.mark.broker]

SERVE_DEADLINE = 20.0  # seconds until the client gets the expected answer
X64_UEFI = "0x5d:0007"  # udhcpc -x: option 93 (client architecture) = 7, x64 UEFI

# The udhcpc event script: record address, next server (siaddr) and boot file, one a
# line (udhcpc exports siaddr and boot_file only when the answer has them).
_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew) printf '%s\\n%s\\n%s\\n' "$ip" "$siaddr" "$boot_file" > "{out}.tmp" \\
        && mv "{out}.tmp" "{out}" ;;
esac
exit 0
"""

Answer = tuple[str, str, str]  # address, next server, boot file


def pxe_request(net: netns.Link, workdir: Path) -> Answer | None:
    """One DISCOVER..ACK as an x64 UEFI client; what it was given, or None."""
    out = workdir / f"pxe-{uuid.uuid4().hex[:8]}"
    script = workdir / f"{out.name}.sh"
    script.write_text(_SCRIPT.format(out=out))
    script.chmod(0o755)
    try:
        cmd = ["ip", "netns", "exec", net.client_ns, "busybox", "udhcpc", "-i", net.client_if]
        cmd += ["-n", "-q", "-f", "-s", str(script), "-x", X64_UEFI]
        cmd += ["-t", str(netns.DISCOVER_TRIES), "-T", str(netns.DISCOVER_PAUSE), "-A", "1"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(cmd, capture_output=True, timeout=netns.CLIENT_TIMEOUT, check=False)
        if not out.exists():
            return None
        address, server, file, *_ = [*out.read_text().split("\n"), "", "", ""]
        return address, server, file
    finally:
        out.unlink(missing_ok=True)
        script.unlink(missing_ok=True)


def boots(lab: Lab, mac: str, expected: Answer, what: str) -> None:  # noqa: F811
    """The client with ``mac`` is given ``expected``, within the deadline."""
    lab.client.set_mac(mac)
    try:
        wait_for_answer(lab.client, expected, what)
    except netns.HarnessError as exc:
        lab.fail(str(exc))


def wait_for_answer(client: netns.Client, expected: Answer, what: str) -> None:
    seen: list[Answer | None] = []
    started = time.monotonic()

    def attempt() -> bool:
        seen.append(pxe_request(client.net, client.workdir))
        return seen[-1] == expected

    try:
        netns.wait_until(attempt, SERVE_DEADLINE, f"{what}: {expected}")
    except netns.HarnessError as exc:
        raise netns.HarnessError(f"{exc}; answers: {seen[-3:]}") from None
    print(f"{what}: {expected} after {time.monotonic() - started:.2f} s")


def test_isc_boot_options_follow_subnet_hardware_type_and_host(lab: Lab) -> None:  # noqa: F811
    mac, fixed = new_mac(), lab.ip(30)
    pxe_server, install_server = lab.ip(2), lab.ip(3)
    lab.db.execute("INSERT INTO hardware_type (name) VALUES ('e2e-uefi-box')")
    lab.change(
        "a host of that hardware type",
        lambda: lab.db.execute(
            "WITH h AS (INSERT INTO host (hostname, hardware_type_id)"
            " SELECT 'pxe-client', id FROM hardware_type WHERE name = 'e2e-uefi-box'"
            " RETURNING id) INSERT INTO interface (host_id, mac, ip) SELECT id, %s, %s FROM h",
            (mac, fixed),
        ),
    )
    boots(lab, mac, (fixed, "", ""), "no boot options yet")

    lab.change(
        "the subnet's boot options",
        lambda: lab.db.execute(
            "UPDATE subnet SET next_server = %s, boot_file = 'pxelinux.0' WHERE name = 'e2e-omapi'",
            (pxe_server,),
        ),
    )
    lab.assert_starts(2, "a subnet change goes through the file")
    boots(lab, mac, (fixed, pxe_server, "pxelinux.0"), "the subnet's boot file")

    lab.change(
        "the hardware type's x64 UEFI file",
        lambda: lab.db.execute(
            "UPDATE hardware_type SET boot_file_uefi_x64 = 'uefi/grubx64.efi'"
            " WHERE name = 'e2e-uefi-box'"
        ),
    )
    boots(lab, mac, (fixed, pxe_server, "uefi/grubx64.efi"), "the hardware type's UEFI file")

    lab.change(
        "the host's own boot file and server",
        lambda: lab.db.execute(
            "UPDATE host SET boot_file = 'hosts/pxe-client.efi', next_server = %s"
            " WHERE hostname = 'pxe-client'",
            (install_server,),
        ),
    )
    boots(lab, mac, (fixed, install_server, "hosts/pxe-client.efi"), "the host's file")
    # host and hardware type changes reached the running dhcpd over OMAPI: no restart
    lab.assert_starts(2, "host and hardware type changes over OMAPI")
    assert lab.applies("omapi") >= 3

    # and a restart at any moment serves the same (the file holds it all)
    lab.restart_plainly()
    boots(lab, mac, (fixed, install_server, "hosts/pxe-client.efi"), "after a restart")


def test_kea_boot_options_follow_subnet_hardware_type_and_host(
    need_kea: None,
    db_url: str,
    db: psycopg.Connection[tuple[object, ...]],
    net: netns.Link,
    workdir: Path,
    client: netns.Client,
    relay: pipeline.Daemon,  # noqa: F811
    start_generator: Callable[[list[str]], pipeline.Daemon],  # noqa: F811
) -> None:
    """The same steps with Kea (inline reservations, config-reload after each change)."""
    mac, fixed = new_mac(), str(net.host(30))
    pxe_server, install_server = str(net.host(2)), str(net.host(3))
    start, end = configs.pool_range(net)
    db.execute(
        "INSERT INTO subnet (name, network, gateway, pool_start, pool_end, lease_time,"
        " next_server, boot_file) VALUES ('e2e-pxe', %s, %s, %s, %s, 600, %s, 'pxelinux.0')",
        (str(net.network), str(net.server_ip), start, end, pxe_server),
    )
    db.execute("INSERT INTO hardware_type (name) VALUES ('e2e-uefi-box')")
    db.execute(
        "WITH h AS (INSERT INTO host (hostname, hardware_type_id)"
        " SELECT 'pxe-client', id FROM hardware_type WHERE name = 'e2e-uefi-box'"
        " RETURNING id) INSERT INTO interface (host_id, mac, ip) SELECT id, %s, %s FROM h",
        (mac, fixed),
    )
    paths = netns.kea_paths(workdir)
    paths["conf"].write_text(configs.kea(net, workdir, {}))
    private = pipeline.kea_lease_flag() is None
    with netns.kea_dhcp4(net, workdir, private_var_lib=private) as server:
        generator = start_generator(pipeline.kea_args(workdir))
        daemons = [relay, generator]

        def reloaded() -> bool:
            subnets = server.command("config-get")["arguments"]["Dhcp4"]["subnet4"]
            return sum(len(s.get("reservations", [])) for s in subnets) == 1

        wait_for_file(paths["conf"], [mac], daemons, reloaded)
        client.set_mac(mac)
        wait_for_answer(client, (fixed, pxe_server, "pxelinux.0"), "Kea: the subnet's file")

        db.execute(
            "UPDATE hardware_type SET boot_file_uefi_x64 = 'uefi/grubx64.efi'"
            " WHERE name = 'e2e-uefi-box'"
        )
        wanted = (fixed, pxe_server, "uefi/grubx64.efi")
        wait_for_answer(client, wanted, "Kea: the hardware type's UEFI file")

        db.execute(
            "UPDATE host SET boot_file = 'hosts/pxe-client.efi', next_server = %s"
            " WHERE hostname = 'pxe-client'",
            (install_server,),
        )
        wanted = (fixed, install_server, "hosts/pxe-client.efi")
        wait_for_answer(client, wanted, "Kea: the host's file")
