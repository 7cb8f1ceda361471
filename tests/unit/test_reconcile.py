"""When a reconciliation runs and which differences count as drift (no clock needed)."""

from __future__ import annotations

import json

from generator import reconcile
from machinedb import change_message as contract


def ref(table: str, pk: object, op: str = "UPDATE") -> contract.ChangeRef:
    return contract.parse({"table": table, "op": op}, json.dumps({"pk": pk}))


def suspect(label: str, interface: int, host: int) -> reconcile.Suspect:
    return reconcile.Suspect(
        label=label, interfaces=frozenset({interface}), hosts=frozenset({host})
    )


def test_due_every_interval_and_reset_by_any_full_pass() -> None:
    r = reconcile.Reconciler(interval=600, grace=10, now=0)
    assert not r.due(599)
    assert r.due(600)
    r.rescheduled(now=500)  # a reconnect's full pass counts
    assert not r.due(1000)
    assert r.due(1100)
    assert not reconcile.Reconciler(interval=0, grace=10, now=0).due(10**9)


def test_differences_no_message_explains_are_drift_after_the_grace() -> None:
    r = reconcile.Reconciler(interval=600, grace=10, now=0)
    r.start(
        [suspect("a", 1, 10), suspect("b", 2, 20), suspect("c", 3, 30)],
        now=600,
        covered=[ref("interface", {"id": 1})],  # a message that pass covered
    )
    assert not r.due(10_000)  # one at a time
    r.excuse(ref("host", {"id": 20}))  # on its way: committed before the read
    assert r.finish(609) is None
    assert r.finish(610) == ["c"]
    assert r.finish(611) is None  # reported once


def test_a_message_that_names_no_rows_or_a_subnet_explains_everything() -> None:
    for message in (ref("interface", None, op="TRUNCATE"), ref("subnet", {"id": 1})):
        r = reconcile.Reconciler(interval=600, grace=10, now=0)
        r.start([suspect("a", 1, 10)], now=600)
        r.excuse(message)
        assert r.finish(700) == []
