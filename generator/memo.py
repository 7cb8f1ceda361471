"""What one render pass can reuse from the previous one.

Every render reads the whole inventory in one snapshot, validates all of it and renders
all of it: that is what keeps each config a consistent picture of the database. Between
two passes, though, almost every row is the same. The read gives an unchanged row the
same ``model.Interface`` object as last time, so the per-row work of validation and
rendering is looked up by identity instead of done again.

Each pass keeps only the entries it used, so the memory held is one pass's worth.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from generator import model

Key = TypeVar("Key", bound=Hashable)
Obj = TypeVar("Obj")
Value = TypeVar("Value")


Entry = TypeVar("Entry")


class _TwoPasses(Generic[Key, Entry]):
    """The entries of the last finished pass, and those the current pass has used."""

    def __init__(self) -> None:
        self._previous: dict[Key, Entry] = {}
        self._current: dict[Key, Entry] = {}

    def end_pass(self) -> None:
        """Keep what this pass used, for the next one; drop the rest."""
        self._previous, self._current = self._current, {}

    def abandon_pass(self) -> None:
        """Forget what a failed pass computed; the last good pass's entries stay."""
        self._current = {}

    def clear(self) -> None:
        self._previous, self._current = {}, {}

    def __len__(self) -> int:
        return len(self._previous)


class ByValue(_TwoPasses[Key, Value]):
    """Values made from a hashable key (a raw database row) in this pass or the last."""

    def map(self, keys: Iterable[Key], make: Callable[[Key], Value]) -> list[Value]:
        """The value for each key: the last pass's, else ``make(key)``. One call per pass
        and a plain loop: per-row method calls cost as much as the lookups."""
        previous, current = self._previous, self._current
        values = []
        for key in keys:
            value = previous.get(key)
            if value is None:
                value = make(key)
            current[key] = value
            values.append(value)
        return values


class ByIdentity(Generic[Obj, Value], _TwoPasses[int, tuple[Obj, Value]]):
    """Values computed for the very objects seen in this pass or the last.

    Keyed by ``id()``, which is cheap where hashing a dataclass of addresses is not. The
    memo holds each object too, so its id cannot be reused while the entry exists.
    """

    def map(self, objs: Iterable[Obj], compute: Callable[[Obj], Value]) -> list[Value]:
        """The value for each object: the last pass's for the very same object, else
        ``compute(obj)``."""
        previous, current = self._previous, self._current
        values = []
        for obj in objs:
            key = id(obj)
            entry = previous.get(key)
            if entry is None or entry[0] is not obj:
                entry = (obj, compute(obj))
            current[key] = entry
            values.append(entry[1])
        return values


Fault = tuple[str, str] | None  # (rule, detail) of a row validation leaves out
OwnCheck = tuple[Fault, str, int]  # a row's own fault, its canonical mac, its address


@dataclass
class Memo:
    """The memos of one daemon, handed to every stage of each render pass."""

    # read: raw row -> model.Interface, so an unchanged row is the same object
    rows: ByValue[tuple[Any, ...], model.Interface] = field(default_factory=ByValue)
    # validate: interface -> its own checks; valid only for the same ``subnets``
    faults: ByIdentity[model.Interface, OwnCheck] = field(default_factory=ByIdentity)
    subnets: tuple[model.Subnet, ...] | None = None
    # render_isc: interface -> (sort key, host block text)
    isc_hosts: ByIdentity[model.Interface, tuple[tuple[int, str], str]] = field(
        default_factory=ByIdentity
    )

    def _all(self) -> tuple[ByValue[Any, Any] | ByIdentity[Any, Any], ...]:
        return (self.rows, self.faults, self.isc_hosts)

    def end_pass(self) -> None:
        """Keep what this pass used, for the next one."""
        for part in self._all():
            part.end_pass()

    def abandon_pass(self) -> None:
        """Forget what a failed pass computed; the last good pass's entries stay."""
        for part in self._all():
            part.abandon_pass()
