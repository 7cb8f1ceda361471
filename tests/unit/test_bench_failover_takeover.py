"""The pure parts of bench/failover_takeover.py: frames, exchanges, windows, the figures."""

from __future__ import annotations

import errno
import importlib
import socket
import struct
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
PRIMARY, SECONDARY = "10.64.0.1", "10.64.0.2"


@pytest.fixture(scope="module")
def ft() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("failover_takeover")
    finally:
        sys.path.remove(str(BENCH))


def frame(
    kind: int,
    xid: int,
    mac: str,
    *,
    server: str | None = None,
    secs: int = 0,
    ports: tuple[int, int] = (67, 67),
    ethertype: bytes = b"\x08\x00",
) -> bytes:
    """An Ethernet frame holding a DHCP message (perfdhcp's relay ports by default)."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    bootp = struct.pack("!BBBBIHH16s", 1, 1, 6, 0, xid, secs, 0, b"\0" * 16) + chaddr
    options = b"\x63\x82\x53\x63" + bytes([53, 1, kind])
    if server is not None:
        options += bytes([54, 4]) + socket.inet_aton(server)
    payload = bootp + b"\0" * 192 + options + b"\xff"
    udp = struct.pack("!HHHH", *ports, 8 + len(payload), 0) + payload
    ip = bytes([0x45, 0]) + struct.pack("!H", 20 + len(udp)) + b"\0" * 5 + b"\x11" + b"\0" * 10
    return b"\xff" * 6 + b"\x02" * 6 + ethertype + ip + udp


def test_decode_reads_kind_xid_mac_and_server(ft: ModuleType) -> None:
    offer = ft.decode(frame(2, 0xABCDEF01, "02:5e:00:00:00:07", server=PRIMARY), 12.5)
    assert offer == ft.Packet(at=12.5, kind=2, xid=0xABCDEF01, mac="02:5e:00:00:00:07",
                              server=PRIMARY)  # fmt: skip
    client = ft.decode(frame(1, 1, "02:5e:00:00:00:07", secs=9, ports=(68, 67)), 1.0)
    assert client is not None and client.kind == 1 and client.server is None
    assert client.secs == 9


@pytest.mark.parametrize(
    "bad",
    [
        frame(1, 1, "02:00:00:00:00:01", ethertype=b"\x86\xdd"),  # IPv6
        frame(1, 1, "02:00:00:00:00:01", ports=(53, 67)),  # not DHCP's ports
        frame(1, 1, "02:00:00:00:00:01")[:200],  # cut short
        b"",
    ],
)
def test_decode_ignores_what_is_not_dhcp(ft: ModuleType, bad: bytes) -> None:
    assert ft.decode(bad, 0.0) is None


class _Socket:
    """recvmsg hands out ``reads`` in turn (an exception is raised); then EBADF."""

    def __init__(self, reads: list[object]) -> None:
        self.reads = reads

    def recvmsg(self, size: int, ancillary: int) -> object:
        item = self.reads.pop(0) if self.reads else OSError(errno.EBADF, "closed")
        if isinstance(item, BaseException):
            raise item
        return item, [], 0, None


def test_capture_reads_on_across_the_link_going_down(ft: ModuleType) -> None:
    capture = ft.Capture.__new__(ft.Capture)
    capture.packets, capture.link_errors, capture.stop = [], 0, threading.Event()
    offer = frame(2, 7, "02:5e:00:00:00:07", server=PRIMARY)
    capture.sock = _Socket([
        OSError(errno.ENETDOWN, "down"), TimeoutError(), offer,
        OSError(errno.ENETDOWN, "down"), frame(5, 7, "02:5e:00:00:00:07", server=PRIMARY),
    ])  # fmt: skip
    capture._run()  # returns at the EBADF
    assert [p.kind for p in capture.packets] == [2, 5]
    assert capture.link_errors == 2
    assert capture.sock.reads == []


def packet(ft: ModuleType, at: float, kind: int, xid: int, mac: str = "m1",
           server: str | None = None) -> object:  # fmt: skip
    return ft.Packet(at=at, kind=kind, xid=xid, mac=mac, server=server)


def test_answers_match_by_kind_and_xid_within_the_drop_time(ft: ModuleType) -> None:
    packets = [
        packet(ft, 0.0, 1, 1),  # DISCOVER, offered by both servers
        packet(ft, 0.01, 2, 1, server=PRIMARY),
        packet(ft, 0.02, 2, 1, server=SECONDARY),
        packet(ft, 0.03, 3, 1),  # its REQUEST (same xid), NAKed
        packet(ft, 0.04, 6, 1, server=PRIMARY),
        packet(ft, 1.0, 1, 2),  # DISCOVER answered after the drop time: lost
        packet(ft, 2.5, 2, 2, server=PRIMARY),
        packet(ft, 3.0, 1, 3),  # DISCOVER answered by an ACK: not an answer to it
        packet(ft, 3.1, 5, 3, server=PRIMARY),
        packet(ft, 3.2, 2, 99, server=PRIMARY),  # an OFFER nobody asked for
    ]
    found = ft.exchanges(reversed(packets))  # order of arrival is not assumed
    assert [(e.kind, e.xid, e.answered) for e in found] == [
        (1, 1, True), (3, 1, True), (1, 2, False), (1, 3, False),
    ]  # fmt: skip
    assert found[0].servers == {PRIMARY, SECONDARY}
    assert found[1].answers == ((0.04, PRIMARY),)


def scenario(
    ft: ModuleType, *, loss: float, back: dict[str, float], owner: dict[str, str | None]
) -> list[object]:
    """Ten DISCOVERs a second for 10 s from MACs a0..a4 (``owner['a']`` answers them) and
    b0..b4 (``owner['b']``); after ``loss`` only the secondary answers, each group from
    ``back[group]`` s after the loss."""
    found = []
    for i in range(100):
        at = i * 0.1 + 0.05
        group = "ab"[i % 2]
        mac = f"{group}{i // 2 % 5}"
        server = owner[group] if at < loss else SECONDARY
        if at >= loss and at - loss < back[group]:
            server = None
        answers = ((at + 0.001, server),) if server is not None else ()
        found.append(ft.Exchange(sent=at, kind=1, xid=i, mac=mac, answers=answers))
    return found


def test_takeover_of_a_load_balanced_pair(ft: ModuleType) -> None:
    """ISC: each server answers its half; after the loss the secondary answers its own
    half at once and the primary's half only 2 s later."""
    found = scenario(ft, loss=5.0, back={"a": 2.0, "b": 0.0}, owner={"a": PRIMARY, "b": SECONDARY})
    r = ft.takeover(found, loss=5.0, end=9.9, primary=PRIMARY, secondary=SECONDARY)
    # the first DISCOVER after the loss is the primary's client's, the second is answered
    assert r["gap_window"] == pytest.approx(0.1)
    assert r["gap_any"] == pytest.approx(0.15)
    assert r["gap_primary_clients"] == pytest.approx(2.05)
    assert r["last_unanswered"] == pytest.approx(1.85)
    assert r["clients_by_server_before"] == {"primary": 5, "secondary": 5, "both": 0}
    assert (r["sent_before"], r["unanswered_before"], r["silent_windows_before"]) == (50, 0, 0)
    assert (r["sent_after"], r["unanswered_after"]) == (49, 10)
    assert r["unanswered_after_primary_clients"] == 10
    assert r["answers_before"] == {PRIMARY: 25, SECONDARY: 25}
    assert r["answers_after"] == {SECONDARY: 39}


def test_takeover_of_a_hot_standby_pair(ft: ModuleType) -> None:
    """Kea hot-standby: the primary answers everyone; nothing is answered for 3 s."""
    found = scenario(ft, loss=5.0, back={"a": 3.0, "b": 3.0}, owner={"a": PRIMARY, "b": PRIMARY})
    r = ft.takeover(found, loss=5.0, end=9.9, primary=PRIMARY, secondary=SECONDARY)
    assert r["gap_window"] == pytest.approx(3.0)
    assert r["gap_any"] == r["gap_primary_clients"] == pytest.approx(3.05)
    assert r["primary_clients"] == 10 and r["unanswered_after"] == 30
    windows = r["windows"]
    assert [w["start"] for w in windows[:2]] == [-5.0, -4.9]  # aligned on the loss
    after = [w for w in windows if 0 <= w["start"] < 3.0]
    assert len(after) == 30 and all(w["sent"] == 1 and w["answered"] == 0 for w in after)


def test_takeover_counts_a_stall_before_the_loss(ft: ModuleType) -> None:
    found = scenario(ft, loss=5.0, back={"a": 0.0, "b": 0.0}, owner={"a": PRIMARY, "b": None})
    r = ft.takeover(found, loss=5.0, end=9.9, primary=PRIMARY, secondary=SECONDARY)
    assert (r["unanswered_before"], r["silent_windows_before"]) == (25, 25)
    assert r["last_unanswered"] is None


def test_kea_transitions_are_read_from_its_log(ft: ModuleType) -> None:
    log = (
        "2026-12-01 11:50:01.250 INFO  [kea-dhcp4.ha-hooks/77.1] HA_STATE_TRANSITION server"
        " dhcp-b: server transitions from WAITING to HOT-STANDBY state, partner state is"
        " HOT-STANDBY\n"
        "2026-12-01 11:50:09.500 INFO  [kea-dhcp4.ha-hooks/77.1] HA_STATE_TRANSITION server"
        " dhcp-b: server transitions from HOT-STANDBY to PARTNER-DOWN state, partner state"
        " is UNAVAILABLE\n"
        "2026-12-01 11:50:09.600 INFO  [kea-dhcp4.dhcp4/77.1] DHCP4_QUERY_LABEL received\n"
    )
    start = datetime(2026, 12, 1, 11, 50, 5).timestamp()
    assert ft.kea_transitions(log, after=start) == [(start + 4.5, "HOT-STANDBY", "PARTNER-DOWN")]


def test_macs_are_distinct_and_locally_administered(ft: ModuleType) -> None:
    found = ft.macs(300, 7)
    assert len(set(found)) == 300
    assert all(int(mac[:2], 16) & 0x03 == 0x02 for mac in found)


def test_the_primarys_own_late_answer_is_no_takeover(ft: ModuleType) -> None:
    """A DISCOVER sent just as the link went down may still be answered by the primary:
    its clients count as served again only once the survivor answers them."""
    found = [
        ft.Exchange(sent=4.0, kind=1, xid=1, mac="a", answers=((4.001, PRIMARY),)),
        ft.Exchange(sent=5.001, kind=1, xid=2, mac="a", answers=((5.002, PRIMARY),)),
        ft.Exchange(sent=6.0, kind=1, xid=3, mac="a"),
        ft.Exchange(sent=7.0, kind=1, xid=4, mac="a", answers=((7.001, SECONDARY),)),
    ]
    r = ft.takeover(found, loss=5.0, end=8.0, primary=PRIMARY, secondary=SECONDARY)
    assert r["gap_any"] == pytest.approx(0.001)
    assert r["gap_primary_clients"] == pytest.approx(2.0)
    assert r["answers_after"] == {PRIMARY: 1, SECONDARY: 1}
