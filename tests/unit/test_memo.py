"""memo: a pass that reuses the previous pass's work gives exactly what a fresh pass gives.

The daemon validates and renders every snapshot in full, with per-row results of
unchanged rows looked up in ``memo``; a wrong reuse would render a stale or invalid row.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator import daemon, memo, model, render, validate
from tests.unit import inventories as build
from tests.unit.test_render_property import inventories

LAN = build.subnet(1, "10.0.0.0/24", pool=("10.0.0.200", "10.0.0.250"))


def fresh(inventory: model.Inventory) -> tuple[validate.Checked, str]:
    checked = validate.check(inventory)
    return checked, render.render(checked.inventory, fmt="isc")


def with_memo(inventory: model.Inventory, kept: memo.Memo) -> tuple[validate.Checked, str]:
    checked = validate.check(inventory, memo=kept)
    text = render.document(checked.inventory, fmt="isc", memo=kept).text
    kept.end_pass()
    return checked, text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=inventories(), second=inventories(), data=st.data())
def test_a_pass_after_another_equals_a_fresh_pass(
    first: model.Inventory, second: model.Inventory, data: st.DataObject
) -> None:
    """The second inventory reuses some of the first's very objects (unchanged rows),
    and keeps or replaces its subnets, as consecutive snapshots do."""
    reused = data.draw(st.lists(st.sampled_from(first.interfaces), unique_by=id, max_size=8))
    subnets = data.draw(st.sampled_from([first.subnets, second.subnets]))
    later = model.Inventory(subnets=subnets, interfaces=(*reused, *second.interfaces))
    kept = memo.Memo()
    assert with_memo(first, kept) == fresh(first)
    assert with_memo(later, kept) == fresh(later)
    assert with_memo(first, kept) == fresh(first)  # and back again


def test_a_changed_row_is_a_new_object_and_is_rendered_anew() -> None:
    row = build.interface(1, "web1", "02:00:00:00:00:01", "10.0.0.10")
    kept = memo.Memo()
    _, before = with_memo(model.Inventory(subnets=(LAN,), interfaces=(row,)), kept)
    moved = dataclasses.replace(row, ip=ipaddress.IPv4Address("10.0.0.11"))
    _, after = with_memo(model.Inventory(subnets=(LAN,), interfaces=(moved,)), kept)
    assert "fixed-address 10.0.0.10;" in before
    assert "fixed-address 10.0.0.11;" in after and "10.0.0.10;" not in after


def test_a_subnet_change_revalidates_unchanged_rows() -> None:
    """The same row object: fine in the first pass, inside the pool after the pool grew."""
    row = build.interface(1, "web1", "02:00:00:00:00:01", "10.0.0.100")
    kept = memo.Memo()
    checked, _ = with_memo(model.Inventory(subnets=(LAN,), interfaces=(row,)), kept)
    assert checked.problems == ()
    grown = dataclasses.replace(LAN, pool_start=ipaddress.IPv4Address("10.0.0.50"))
    checked, text = with_memo(model.Inventory(subnets=(grown,), interfaces=(row,)), kept)
    assert [p.kind for p in checked.problems] == ["interface_ip_not_in_pool"]
    assert "web1" not in text


def test_each_pass_keeps_only_what_it_used() -> None:
    rows = [
        build.interface(i, f"h{i}", f"02:00:00:00:00:{i:02x}", f"10.0.0.{i + 1}")
        for i in range(1, 21)
    ]
    kept = memo.Memo()
    with_memo(model.Inventory(subnets=(LAN,), interfaces=tuple(rows)), kept)
    assert len(kept.faults) == len(kept.isc_hosts) == 20
    with_memo(model.Inventory(subnets=(LAN,), interfaces=tuple(rows[:5])), kept)
    assert len(kept.faults) == len(kept.isc_hosts) == 5


def test_by_value_gives_the_same_object_for_an_equal_key() -> None:
    made: list[tuple[int, str]] = []

    def make(key: tuple[int, str]) -> list[object]:
        made.append(key)
        return [key]

    values: memo.ByValue[tuple[int, str], list[object]] = memo.ByValue()
    [first] = values.map([(1, "a")], make)
    values.end_pass()
    assert values.map([(1, "a")], make) == [first] and values.map([(1, "a")], make)[0] is first
    values.abandon_pass()  # a failed pass: the last good one stays
    assert values.map([(1, "a")], make)[0] is first
    assert made == [(1, "a")]
    values.end_pass()
    values.end_pass()  # a pass that did not use the key drops it
    assert values.map([(1, "a")], make)[0] is not first
    assert made == [(1, "a"), (1, "a")]


def test_by_identity_reuses_only_the_very_same_object() -> None:
    calls: list[str] = []

    def compute(obj: list[str]) -> str:
        calls.append(obj[0])
        return obj[0].upper()

    values: memo.ByIdentity[list[str], str] = memo.ByIdentity()
    a, equal_to_a = ["a"], ["a"]
    assert values.map([a], compute) == ["A"]
    values.end_pass()
    assert values.map([a, equal_to_a], compute) == ["A", "A"]
    assert calls == ["a", "a"]  # the equal but distinct object was computed anew


def test_the_daemon_keeps_a_memo_only_for_inventories_within_its_limit() -> None:
    carry = daemon.Carry(max_rows=2)
    assert carry.memo_for_pass() is None  # the first pass: nothing to reuse yet
    carry.last_rows = 2
    kept = carry.memo_for_pass()
    assert kept is carry.memo
    rows = [
        build.interface(i, f"h{i}", f"02:00:00:00:00:{i:02x}", f"10.0.0.{i + 1}") for i in (1, 2, 3)
    ]
    with_memo(model.Inventory(subnets=(LAN,), interfaces=tuple(rows)), kept)
    carry.last_rows = 3  # grew past the limit: the memo is let go
    assert carry.memo_for_pass() is None
    assert carry.memo is not kept and len(carry.memo.faults) == 0
    assert daemon.Carry(max_rows=0, last_rows=0).memo_for_pass() is not None
    assert daemon.Carry(max_rows=0, last_rows=1).memo_for_pass() is None
