"""The validated reservations of one scope, kept in memory and updated row by row.

A full pass builds a ``State`` from every row; an incremental pass hands it the rows a
few messages named, re-read from the database, and the ids of rows that are gone. The
outcome is the same as ``validate.check`` on the whole inventory, which the
equivalence tests hold it to byte for byte:

- a row's own checks (address, names, MAC, placement in a subnet) look at that row
  and the subnets only;
- the duplicate checks keep, for each MAC and each address, the lowest id among the
  rows that pass their own checks and are not themselves left out by a lower one.
  ``_settle`` recomputes that greedy rule only for the rows that share a MAC or an
  address with a changed row, in id order, so a change costs what it touches.

The MAC and address indexes hold a bare id where one row holds the key (nearly
always) and a list only where rows clash: at 1,000,000 rows two lists a row were
about a fifth of the state's memory.

Each kept row is held as its rendered output (``make``: an ISC host block, or the row
itself for Kea) under its address, which is unique among kept rows; ``changes``
records, per address, what was there before the first change since it was last
taken, so an apply can send just the difference to a running server.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from generator import model, validate

Out = TypeVar("Out")
Key = TypeVar("Key", str, int)
# a row that passes its own checks: (address, canonical MAC, the row as read, output)
Record = tuple[int, str, model.Interface, Out]
# MAC or address -> the id of the one _ok row holding it, or the ids of several
Holders = int | list[int]


class State(Generic[Out]):
    def __init__(
        self,
        *,
        subnets: tuple[model.Subnet, ...],
        subnet_problems: Iterable[validate.Problem] = (),
        subnet_ids: frozenset[int] | None = None,
        make: Callable[[model.Interface], Out],
    ) -> None:
        self.subnets = subnets
        self.subnet_problems = tuple(subnet_problems)
        # every subnet read, kept or left out: a change to one of them needs a full pass
        self.subnet_ids = frozenset(s.id for s in subnets) if subnet_ids is None else subnet_ids
        self._finder = validate.SubnetIndex(subnets)
        self._make = make
        self._ok: dict[int, Record[Out]] = {}  # id -> record, rows with no own fault
        self._faults: dict[int, validate.Problem] = {}  # rows with an own fault
        self._losers: dict[int, validate.Problem] = {}  # duplicates of a kept row
        # rows with no own fault whose unsafe boot options were dropped (legacy rows)
        self._notes: dict[int, list[validate.Problem]] = {}
        self._by_mac: dict[str, Holders] = {}  # MAC -> id(s) of _ok rows holding it
        self._by_ip: dict[int, Holders] = {}
        self._kept: dict[int, int] = {}  # address -> id of the kept row there
        self._order: list[int] = []  # addresses of kept rows, sorted
        self.changes: dict[int, Out | None] = {}  # address -> output before the changes

    # -- building and updating ---------------------------------------------------------

    @classmethod
    def build(
        cls,
        inventory: model.Inventory,
        *,
        make: Callable[[model.Interface], Out],
    ) -> State[Out]:
        """The state of a whole inventory, as ``validate.check`` would judge it."""
        return cls.build_from(inventory.subnets, inventory.interfaces, make=make)

    @classmethod
    def build_from(
        cls,
        subnets: Iterable[model.Subnet],
        rows: Iterable[model.Interface],
        *,
        make: Callable[[model.Interface], Out],
    ) -> State[Out]:
        """``build`` from rows as they are read, in any order: none is held beyond it."""
        problems: list[validate.Problem] = []
        read = tuple(subnets)
        checked = validate.check_subnets(read, problems)
        ids = frozenset(subnet.id for subnet in read)
        state = cls(subnets=checked, subnet_problems=problems, subnet_ids=ids, make=make)
        for row in rows:
            state._enter(row)
        # A MAC or address held by one row only needs no ordering: keep those at once.
        # Only the rows that share one go through the duplicate rule (nearly none).
        contested = []
        by_mac, by_ip, kept = state._by_mac, state._by_ip, state._kept
        for id_, (address, mac, _, _) in state._ok.items():
            if type(by_mac[mac]) is int and type(by_ip[address]) is int:
                kept[address] = id_
            else:
                contested.append(id_)
        state._order = sorted(kept)
        state._settle(contested)
        state.changes.clear()
        return state

    def update(self, rows: Iterable[model.Interface], gone: Iterable[int]) -> None:
        """Replace the rows of ``rows`` (by id) and remove those of ``gone``."""
        work: list[int] = []
        for id_ in gone:
            self._leave(id_, work)
        for row in rows:
            self._leave(row.id, work)
            if self._enter(row):
                work.append(row.id)
        self._settle(work)

    def _enter(self, row: model.Interface) -> bool:
        """Add a row not in the state; True if it passed its own checks (and so waits
        for the duplicate rule to decide)."""
        fault, mac, address = validate.own_check_of(row, self._finder)
        if fault is not None:
            self._faults[row.id] = validate.interface_problem(row, fault)
            return False
        if row.boot is not None:
            notes: list[validate.Problem] = []
            row = validate.clean_interface_boot(row, notes)
            if notes:
                self._notes[row.id] = notes
        canonical = row if mac == row.mac else _with_mac(row, mac)
        self._ok[row.id] = (address, mac, row, self._make(canonical))
        _hold(self._by_mac, mac, row.id)
        _hold(self._by_ip, address, row.id)
        return True

    def _leave(self, id_: int, work: list[int]) -> None:
        """Take a row out; the rows sharing its MAC or address are looked at again."""
        self._faults.pop(id_, None)
        self._losers.pop(id_, None)
        self._notes.pop(id_, None)
        record = self._ok.pop(id_, None)
        if record is None:
            return
        address, mac, _, _ = record
        if self._kept.get(address) == id_:
            self._unkeep(address, record)
        work.extend(_release(self._by_mac, mac, id_))
        work.extend(_release(self._by_ip, address, id_))

    def _settle(self, work: list[int]) -> None:
        """Decide the rows in ``work``, and every row a changed decision reaches, in id
        order: a row's fate depends only on rows with lower ids."""
        heapq.heapify(work)
        last = None
        while work:
            id_ = heapq.heappop(work)
            if id_ == last:
                continue
            last = id_
            record = self._ok.get(id_)
            if record is None:
                continue
            address, mac, row, _ = record
            fault = self._blocker(id_, "mac", _ids(self._by_mac[mac])) or self._blocker(
                id_, "ip", _ids(self._by_ip[address])
            )
            was_kept = self._kept.get(address) == id_
            if fault is None:
                self._losers.pop(id_, None)
                if not was_kept:
                    self._keep(id_, record, work)
            else:
                self._losers[id_] = validate.interface_problem(row, fault)
                if was_kept:
                    self._unkeep(address, record)
                    self._reach(id_, record, work)

    def _blocker(self, id_: int, key: str, holders: Iterable[int]) -> tuple[str, str] | None:
        """The duplicate fault of ``id_`` if a lower id holding the same key is kept."""
        for other in holders:
            if other < id_ and self._is_kept(other):
                return validate.duplicate_detail(key, other)
        return None

    def _keep(self, id_: int, record: Record[Out], work: list[int]) -> None:
        address, mac, _, _ = record
        for key_holders in (self._by_mac[mac], self._by_ip[address]):
            for other in _ids(key_holders):  # a higher id kept on the same key loses now
                if other != id_ and self._is_kept(other):
                    other_record = self._ok[other]
                    self._unkeep(other_record[0], other_record)
                    self._reach(other, other_record, work)
        self.changes.setdefault(address, None)
        self._kept[address] = id_
        bisect.insort(self._order, address)
        self._reach(id_, record, work)

    def _unkeep(self, address: int, record: Record[Out]) -> None:
        self.changes.setdefault(address, record[3])
        del self._kept[address]
        del self._order[bisect.bisect_left(self._order, address)]

    def _reach(self, id_: int, record: Record[Out], work: list[int]) -> None:
        """Queue the higher ids that share a key with ``id_``: its fate changed."""
        address, mac, _, _ = record
        for holders in (self._by_mac[mac], self._by_ip[address]):
            for other in _ids(holders):
                if other > id_:
                    heapq.heappush(work, other)

    def _is_kept(self, id_: int) -> bool:
        record = self._ok.get(id_)
        return record is not None and self._kept.get(record[0]) == id_

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Kept rows: the reservations."""
        return len(self._kept)

    def outputs(self) -> Iterator[Out]:
        """The kept rows' outputs, by address."""
        ok, kept = self._ok, self._kept
        return (ok[kept[address]][3] for address in self._order)

    def interfaces(self) -> tuple[model.Interface, ...]:
        """The kept rows (canonical MAC), in id order: ``validate.check``'s inventory rows."""
        found = []
        for id_ in sorted(self._kept.values()):
            _, mac, row, _ = self._ok[id_]
            found.append(row if row.mac == mac else _with_mac(row, mac))
        return tuple(found)

    def output_at(self, address: int) -> Out | None:
        id_ = self._kept.get(address)
        return None if id_ is None else self._ok[id_][3]

    def row_at(self, address: int) -> model.Interface | None:
        """The kept row at ``address``, as read, if any."""
        id_ = self._kept.get(address)
        return None if id_ is None else self._ok[id_][2]

    def problems(self) -> tuple[validate.Problem, ...]:
        """Every row left out, as ``validate.check`` lists them: subnets, then rows by id."""
        rows = {**self._faults, **self._losers}
        return self.subnet_problems + tuple(self._rows_problems(rows.keys() | self._notes.keys()))

    def _rows_problems(self, ids: Iterable[int]) -> list[validate.Problem]:
        """The problems of rows ``ids`` in id order: dropped options, then the row's own."""
        found: list[validate.Problem] = []
        for id_ in sorted(ids):
            found += self._notes.get(id_, ())
            problem = self._faults.get(id_) or self._losers.get(id_)
            if problem is not None:
                found.append(problem)
        return found

    def problems_of(self, ids: Iterable[int]) -> list[validate.Problem]:
        """The problems of the rows ``ids`` (those left out, or with options dropped),
        in id order."""
        return self._rows_problems(set(ids))

    def problem_count(self) -> int:
        notes = sum(len(found) for found in self._notes.values())
        return len(self.subnet_problems) + len(self._faults) + len(self._losers) + notes

    def changed(self) -> bool:
        """True if some address's output differs from what it was when changes were
        last taken."""
        return any(before != self.output_at(a) for a, before in self.changes.items())

    def take_changes(self) -> list[tuple[int, Out | None, Out | None]]:
        """(address, output before, output now) for every address whose output changed
        since the last call; forgets them."""
        changes, self.changes = self.changes, {}
        found = []
        for address, before in changes.items():
            now = self.output_at(address)
            if now != before:
                found.append((address, before, now))
        found.sort(key=lambda change: change[0])
        return found

    def restore_changes(self, changes: Iterable[tuple[int, Out | None, Out | None]]) -> None:
        """Put back changes an apply did not get to the server, under later ones."""
        for address, before, _ in changes:
            self.changes[address] = before

    def differences(self, other: State[Out]) -> list[int]:
        """Addresses whose kept output differs between this state and ``other``."""
        found = []
        for address in set(self._kept) | set(other._kept):
            if self.output_at(address) != other.output_at(address):
                found.append(address)
        return sorted(found)

    def inherit_outputs(self, outputs: dict[int, Out]) -> None:
        """Before a first apply: record what differs from ``outputs`` (by address: what
        the server holds now) as this state's changes."""
        for address in set(outputs) | set(self._kept):
            before = outputs.get(address)
            if before != self.output_at(address):
                self.changes.setdefault(address, before)

    def inherit_changes(self, previous: State[Out]) -> None:
        """After a full rebuild: record what differs from ``previous`` (and what it had
        not yet applied) as this state's changes, so an apply sends the difference."""
        self.changes = dict(previous.changes)
        for address in previous.differences(self):
            self.changes.setdefault(address, previous.output_at(address))


def _hold(index: dict[Key, Holders], key: Key, id_: int) -> None:
    """Add ``id_`` to the holders of ``key``."""
    holders = index.get(key)
    if holders is None:
        index[key] = id_
    elif type(holders) is int:
        index[key] = [holders, id_]
    else:
        holders.append(id_)  # type: ignore[union-attr]


def _release(index: dict[Key, Holders], key: Key, id_: int) -> tuple[int, ...]:
    """Take ``id_`` from the holders of ``key``; return the ids still holding it."""
    holders = index[key]
    if type(holders) is int:
        del index[key]
        return ()
    assert isinstance(holders, list)
    holders.remove(id_)
    if len(holders) == 1:
        index[key] = holders[0]
    return tuple(holders)


def _ids(holders: Holders) -> tuple[int, ...] | list[int]:
    return (holders,) if type(holders) is int else holders  # type: ignore[return-value]


def _with_mac(row: model.Interface, mac: str) -> model.Interface:
    return model.Interface(
        id=row.id,
        host_id=row.host_id,
        hostname=row.hostname,
        name=row.name,
        mac=mac,
        ip=row.ip,
        boot=row.boot,
    )
