"""The pure parts of bench/pair_served_latency.py: offers, log lines, figures, arguments."""

from __future__ import annotations

import importlib
import socket
import struct
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
PRIMARY, SECONDARY = "10.64.0.1", "10.64.0.2"
MAC = "02:5f:01:01:00:6e"


@pytest.fixture(scope="module")
def psl() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("pair_served_latency")
    finally:
        sys.path.remove(str(BENCH))


def bootp(op: int, kind: int, mac: str, yiaddr: str, server: str | None) -> bytes:
    """A BOOTP payload (what a UDP socket on port 68 reads) with options 53 and 54."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    header = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, 7, 0, 0x8000, b"\0" * 4,
                         socket.inet_aton(yiaddr), b"\0" * 4, b"\0" * 4)  # fmt: skip
    options = b"\x63\x82\x53\x63" + b"\x00" + bytes([53, 1, kind])  # a pad byte first
    if server is not None:
        options += bytes([54, 4]) + socket.inet_aton(server)
    return header + chaddr + b"\0" * 192 + options + b"\xff"


def test_offer_of_reads_the_address_and_the_server_identifier(psl: ModuleType) -> None:
    offer = bootp(2, 2, MAC, "10.64.0.110", SECONDARY)
    assert psl.dhcp_lab.offer_of(offer, MAC) == ("10.64.0.110", SECONDARY)
    assert psl.dhcp_lab.offer_of(bootp(2, 2, MAC, "10.64.0.110", None), MAC) == (
        "10.64.0.110",
        None,
    )


@pytest.mark.parametrize(
    "packet",
    [
        bootp(2, 5, MAC, "10.64.0.110", PRIMARY),  # an ACK
        bootp(2, 6, MAC, "0.0.0.0", PRIMARY),  # a NAK
        bootp(1, 1, MAC, "0.0.0.0", None),  # the probe's own DISCOVER
        bootp(2, 2, "02:5f:01:01:00:6f", "10.64.0.111", PRIMARY),  # another MAC's offer
        bootp(2, 2, MAC, "10.64.0.110", PRIMARY)[:239],  # cut short
        bootp(2, 2, MAC, "10.64.0.110", PRIMARY).replace(b"\x63\x82\x53\x63", b"\0" * 4),
    ],
)
def test_offer_of_ignores_everything_else(psl: ModuleType, packet: bytes) -> None:
    assert psl.dhcp_lab.offer_of(packet, MAC) is None


def test_quantiles_interpolate_and_take_the_maximum(psl: ModuleType) -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    q = psl.quantiles(values)
    assert q["n"] == 100
    assert q["p50"] == pytest.approx(0.0505)
    assert q["p90"] == pytest.approx(0.0901)
    assert q["p99"] == pytest.approx(0.09901)
    assert q["max"] == 0.1
    assert psl.quantiles([]) == {"n": 0}


def kea_log_line(at: str, text: str) -> str:
    return f"{at} INFO  [kea-dhcp4.leases/1590.140195467006464] {text}"


def test_kea_lines_keep_the_macs_lines_between_two_moments(psl: ModuleType) -> None:
    advert = (f"DHCP4_LEASE_ADVERT [hwtype=1 {MAC}], cid=[01:{MAC}], tid=0x1:"
              " lease 10.64.1.19 will be advertised")  # fmt: skip
    log = "\n".join([
        kea_log_line("2026-12-01 12:20:49.100", advert),
        kea_log_line("2026-12-01 12:20:49.200", advert.replace(MAC, "02:5f:01:01:00:6f")),
        kea_log_line("2026-12-01 12:20:52.000", advert),  # too late
        "a line without a time stamp " + MAC,
    ])  # fmt: skip
    since = datetime(2026, 12, 1, 12, 20, 49).timestamp()
    found = psl.kea_lines(log, MAC, since=since, until=since + 1)
    assert [round(at - since, 3) for at, _ in found] == [0.1]
    assert psl.kea_short(found[0][1]) == "DHCP4_LEASE_ADVERT lease 10.64.1.19"
    assert psl.kea_short("HA_STATE_TRANSITION server1: from X to Y") == "HA_STATE_TRANSITION"
    assert psl.kea_short("no message id here") == "no message id here"


def test_exchange_lines_name_the_kinds_of_one_mac_in_order(psl: ModuleType) -> None:
    packet = psl.takeover.Packet
    packets = [
        packet(at=2.0, kind=6, xid=2, mac=MAC, server=SECONDARY),
        packet(at=1.0, kind=1, xid=1, mac=MAC, server=None),
        packet(at=1.5, kind=2, xid=1, mac="02:5f:01:01:00:6f", server=SECONDARY),
        packet(at=9.0, kind=5, xid=3, mac=MAC, server=SECONDARY),
    ]
    found = psl.exchange_lines(packets, MAC, since=0.5, until=5.0)
    assert found == [(1.0, "DISCOVER", None), (2.0, "NAK", SECONDARY)]


def test_change_macs_are_distinct_and_not_the_inventorys(psl: ModuleType) -> None:
    changes = {psl.change_mac(run, n) for run in (1, 2) for n in range(110, 246)}
    assert len(changes) == 2 * 136
    inventory = set(psl.takeover.macs(psl.INVENTORY, 1)) | set(psl.takeover.macs(100, 2))
    assert not changes & inventory


def result(served: float, server: str, placed: dict[str, float]) -> dict[str, object]:
    return {
        "served": served, "server": server, "servers": [server],
        "by_server": {server: served}, "in_place": placed, "other_offers_before": 0,
    }  # fmt: skip


def test_table_rows_count_who_answered_and_the_secondarys_offers(psl: ModuleType) -> None:
    both = [result(0.02, PRIMARY, {"primary": 0.03, "secondary": 0.04})] * 3
    both += [result(0.05, SECONDARY, {"primary": 0.06, "secondary": 0.06})]
    survivor = [result(0.015, SECONDARY, {"secondary": 0.02})] * 4
    run = {"run": 1, "primary": PRIMARY, "secondary": SECONDARY, "both": both,
           "survivor": survivor, "load": [0.5, 0.7]}  # fmt: skip
    # the second run's pair has other addresses (another segment), the same answers
    other_p, other_s = "10.65.0.1", "10.65.0.2"
    renamed = {PRIMARY: other_p, SECONDARY: other_s}
    second = {
        **run, "run": 2, "primary": other_p, "secondary": other_s,
        **{name: [{**x, "server": renamed[x["server"]],
                   "by_server": {renamed[k]: v for k, v in x["by_server"].items()}}
                  for x in run[name]]
           for name in ("both", "survivor")},
    }  # fmt: skip
    rows = psl.table_rows([run, second])
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| 1", "both", "4"], ["| 1", "survivor", "4"],
        ["| 2", "both", "4"], ["| 2", "survivor", "4"],
        ["| all", "both", "8"], ["| all", "survivor", "8"],
    ]  # fmt: skip
    both_row, survivor_row = rows[0].split(" | "), rows[1].split(" | ")
    assert both_row[3] == "**20.0 ms**"  # p50
    assert both_row[7] == "50.0 ms (1)"  # the secondary offered it once
    assert both_row[8] == "30.0 ms / 40.0 ms"
    assert both_row[9] == "3/1"
    assert survivor_row[8] == "- / 20.0 ms"  # the primary is gone
    assert survivor_row[9] == "0/4"
    assert rows[2].split(" | ")[7:10] == both_row[7:10]
    all_both, all_survivor = rows[4].split(" | "), rows[5].split(" | ")
    assert all_both[7] == "50.0 ms (2)"  # each run's own secondary
    assert all_both[9] == "6/2"  # each run's own primary
    assert all_survivor[9] == "0/8"
    assert all_both[-1] == "0.5, 0.5 |"


def test_arguments_must_fit_below_the_pool(psl: ModuleType) -> None:
    room = psl.LAST_HOST - psl.FIRST_CHANGE + 1
    with pytest.raises(SystemExit):
        psl.main(["--inventory", str(room - 79), "--changes", "40"])
    with pytest.raises(SystemExit):
        psl.main(["--changes", "0"])
