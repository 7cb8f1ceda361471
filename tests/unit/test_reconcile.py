"""When a reconciliation runs and which differences count as drift (no clock needed)."""

from __future__ import annotations

import json

from generator import read, reconcile
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


def test_messages_about_changes_the_read_saw_push_the_verdict_back() -> None:
    """A relay running behind delivers changes the read already had: while they keep
    coming, the pipeline has not caught up to the read, and nothing is counted yet."""
    seen = read.Visibility.parse("500:500:")
    r = reconcile.Reconciler(interval=600, grace=10, now=0)
    r.start([suspect("a", 1, 10)], now=600, seen=seen)
    r.excuse(ref_txid("interface", 2, txid=400), now=608)  # old news: wait longer
    assert r.finish(612) is None
    r.excuse(ref_txid("interface", 3, txid=700), now=613)  # newer than the read: no delay
    assert r.finish(617) is None
    assert r.finish(618) == ["a"]


def test_a_lost_broker_connection_cancels_the_comparison() -> None:
    r = reconcile.Reconciler(interval=600, grace=10, now=0)
    r.start([suspect("a", 1, 10)], now=600)
    r.cancel()
    assert r.finish(10_000) is None
    assert r.due(1200)  # the next one comes in its time


def ref_txid(table: str, id_: int, *, txid: int) -> contract.ChangeRef:
    body = json.dumps({"pk": {"id": id_}, "txid": txid})
    return contract.parse({"table": table, "op": "UPDATE"}, body)
