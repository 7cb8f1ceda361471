"""The incremental state equals a fresh full pass, whatever the order of the changes.

``state.State`` is updated row by row; ``validate.check`` and ``render`` judge the
whole inventory at once. Hypothesis draws tables with many clashing MACs and
addresses (so the duplicate rule cascades), changes them in batches, and after each
batch both must give the same bytes and the same problems, for both formats.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from generator import model, render, render_isc, render_options, state, validate
from tests.unit import inventories

OPTIONS = render_options.RenderOptions()
SUBNETS = (
    inventories.subnet(1, "10.0.0.0/29", pool=("10.0.0.5", "10.0.0.6")),
    inventories.subnet(2, "10.0.1.0/30", name="small"),
    inventories.subnet(3, "10.0.0.0/28", name="overlaps"),  # left out: overlaps 1
)
# few MACs and addresses, so rows clash often; some of them break a rule on their own
MACS = [f"02:00:00:00:00:0{n}" for n in range(1, 5)] + ["02-00-00-00-00-01", "03:00:00:00:00:01"]
ADDRESSES = [f"10.0.0.{n}" for n in range(0, 8)] + ["10.0.1.1", "10.0.1.2", "10.9.9.9"]
NAMES = ["web1", "db1", "Web1", "bad_name"]


# boot options of a row: none, safe ones, or some an old row may hold (dropped, reported)
BOOTS = [
    None,
    inventories.boot("10.0.0.2", "pxelinux.0"),
    inventories.boot(uefi_x64="grubx64.efi"),
    inventories.boot(file="a b", uefi_x64="grubx64.efi"),
    inventories.boot("0.0.0.0"),
]


def row(
    id_: int, hostname: str, mac: str, ip: str, host_id: int, boot: model.Boot | None = None
) -> model.Interface:
    return model.Interface(
        id=id_,
        host_id=host_id,
        hostname=hostname,
        name="eth0",
        mac=mac,
        ip=ipaddress.ip_address(ip),
        boot=boot,
    )


rows = st.builds(
    row,
    st.integers(1, 12),
    st.sampled_from(NAMES),
    st.sampled_from(MACS),
    st.sampled_from(ADDRESSES),
    st.integers(1, 4),
    st.sampled_from(BOOTS),
)
# a batch: rows written (inserted or updated) and ids deleted
batches = st.tuples(st.lists(rows, max_size=5), st.lists(st.integers(1, 14), max_size=3))


def full(table: dict[int, model.Interface], fmt: render.Format) -> tuple[str, list[str]]:
    inventory = model.Inventory(subnets=SUBNETS, interfaces=tuple(table.values()))
    checked = validate.check(inventory)
    text = render.document(checked.inventory, fmt=fmt, options=OPTIONS).text
    return text, [p.message for p in checked.problems]


def incremental(current: state.State[object], fmt: render.Format) -> tuple[str, list[str]]:
    if fmt == "isc":
        preamble = render_isc.preamble(current.subnets, options=OPTIONS)
        text = preamble + "".join(str(block) for block in current.outputs())
    else:
        inventory = model.Inventory(subnets=current.subnets, interfaces=current.interfaces())
        text = render.document(inventory, fmt="kea", options=OPTIONS).text
    return text, [p.message for p in current.problems()]


def maker(fmt: render.Format) -> object:
    return render_isc.host_block if fmt == "isc" else (lambda interface: interface)


@settings(max_examples=300, deadline=None)
@given(
    start=st.lists(rows, max_size=10),
    steps=st.lists(batches, max_size=8),
    fmt=st.sampled_from(["isc", "kea"]),
)
def test_updates_give_what_a_full_pass_gives(
    start: list[model.Interface],
    steps: list[tuple[list[model.Interface], list[int]]],
    fmt: render.Format,
) -> None:
    table = {r.id: r for r in start}
    inventory = model.Inventory(subnets=SUBNETS, interfaces=tuple(table.values()))
    current = state.State.build(inventory, make=maker(fmt))  # type: ignore[arg-type]
    assert incremental(current, fmt) == full(table, fmt)
    for written, deleted in steps:
        for r in written:
            table[r.id] = r
        gone = [id_ for id_ in deleted if id_ not in {r.id for r in written}]
        for id_ in gone:
            table.pop(id_, None)
        # a re-read gives the rows as they are now; a repeated or forged message
        # re-reads rows that did not change, or that never existed: harmless
        now = [table[id_] for id_ in dict.fromkeys(r.id for r in written)]
        current.update([*now, *now[:1]], [*gone, 99])
        assert incremental(current, fmt) == full(table, fmt)
        fresh = state.State.build(
            model.Inventory(subnets=SUBNETS, interfaces=tuple(table.values())),
            make=maker(fmt),  # type: ignore[arg-type]
        )
        assert current.differences(fresh) == []


def test_changes_name_what_a_server_must_be_told() -> None:
    first = row(1, "web1", "02:00:00:00:00:01", "10.0.0.2", 1)
    copy = row(2, "db1", "02:00:00:00:00:01", "10.0.0.3", 2)  # same MAC: left out
    inventory = model.Inventory(subnets=SUBNETS, interfaces=(first, copy))
    current = state.State.build(inventory, make=render_isc.host_block)
    assert len(current) == 1
    assert current.take_changes() == []

    current.update([], [1])  # the first goes: the copy is kept now, at its own address
    changes = current.take_changes()
    assert [(str(ipaddress.IPv4Address(a)), b is None, n is None) for a, b, n in changes] == [
        ("10.0.0.2", False, True),
        ("10.0.0.3", True, False),
    ]
    assert "db1-02-00-00-00-00-01" in str(changes[1][2])
    assert current.take_changes() == []


def test_changes_not_applied_are_restored_under_later_ones() -> None:
    a = row(1, "web1", "02:00:00:00:00:01", "10.0.0.2", 1)
    current = state.State.build(
        model.Inventory(subnets=SUBNETS, interfaces=(a,)), make=render_isc.host_block
    )
    current.update([row(1, "web1", "02:00:00:00:00:01", "10.0.0.3", 1)], [])
    taken = current.take_changes()
    current.restore_changes(taken)  # the apply failed
    current.update([row(1, "web1", "02:00:00:00:00:01", "10.0.0.4", 1)], [])
    again = {ipaddress.IPv4Address(a): (b is None, n is None) for a, b, n in current.take_changes()}
    # 10.0.0.2 still goes, 10.0.0.3 came and went unseen, 10.0.0.4 is new
    assert again == {
        ipaddress.IPv4Address("10.0.0.2"): (False, True),
        ipaddress.IPv4Address("10.0.0.4"): (True, False),
    }
