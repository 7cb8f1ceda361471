"""Which transactions a snapshot saw, from pg_current_snapshot()'s text form."""

from __future__ import annotations

from generator import read


def test_visibility() -> None:
    snapshot = read.Visibility.parse("100:105:101,103")
    assert snapshot.saw(99)
    assert snapshot.saw(100)  # >= xmin but finished before the snapshot
    assert not snapshot.saw(101)  # in progress when the snapshot was taken
    assert snapshot.saw(102)
    assert not snapshot.saw(103)
    assert snapshot.saw(104)
    assert not snapshot.saw(105)  # started after the snapshot
    assert not snapshot.saw(200)


def test_visibility_without_transactions_in_progress() -> None:
    snapshot = read.Visibility.parse("7:7:")
    assert snapshot.saw(6)
    assert not snapshot.saw(7)
