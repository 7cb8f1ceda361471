"""What received change messages ask of the generator: which rows to re-read, or a full pass.

A message is a doorbell that names rows (``machinedb.change_message``). Whether it
matters is decided from what the generator reads (``read.tables_read``), not from a
list of tables: a table the reads do not use is acknowledged quietly, so a table a
DBA starts tracking later costs nothing. Interfaces and hosts are re-read by key; a
change to anything else the reads use (a subnet of the scope, the scope itself, a
truncate, a key that cannot be read) asks for a full pass. Nothing here trusts a
message: a forged one costs a re-read, never a wrong config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from generator import consumer
from machinedb import change_message as contract

logger = logging.getLogger(__name__)

# What a message is, for the metrics: about rows we read, about nothing we read, or
# unreadable (no table: treated as a doorbell for a full pass).
RELEVANT, UNRELATED, BAD = "relevant", "unrelated", "bad"


@dataclass(frozen=True, kw_only=True)
class Change:
    """A delivery and what it names."""

    delivery: consumer.Delivery
    ref: contract.ChangeRef
    kind: str  # RELEVANT, UNRELATED or BAD

    @property
    def txid(self) -> int | None:
        return self.ref.txid

    @property
    def captured_at(self) -> float | None:
        return self.ref.captured_at


def classify(delivery: consumer.Delivery, *, tables: Set[str]) -> Change:
    """Parse ``delivery`` and say whether the tables it names are read; never raises."""
    ref = contract.parse(delivery.headers, delivery.body)
    if ref.table is None:
        kind = BAD
        logger.warning(
            "message %s names no table; treating it as a doorbell",
            ref.event_id or delivery.headers.get("message-id", "?"),
            extra={"action": "bad_message"},
        )
    elif ref.table in tables:
        kind = RELEVANT
    else:
        kind = UNRELATED
        logger.debug("message %s is about %.64r, which no render reads", ref.event_id, ref.table)
    return Change(delivery=delivery, ref=ref, kind=kind)


@dataclass(kw_only=True)
class Plan:
    """The work some messages ask for."""

    full: bool = False
    interface_ids: set[int] = field(default_factory=set)
    host_ids: set[int] = field(default_factory=set)
    subnet_ids: set[int] = field(default_factory=set)  # in scope? (scoped generators)

    def empty(self) -> bool:
        return not (self.full or self.interface_ids or self.host_ids or self.subnet_ids)


def plan(changes: Iterable[Change], *, server: int | None) -> Plan:
    """Merge what ``changes`` name into one plan for a pass over ``server``'s scope."""
    result = Plan()
    for change in changes:
        _add(result, change, server=server)
    return result


def _add(result: Plan, change: Change, *, server: int | None) -> None:
    ref = change.ref
    if change.kind == UNRELATED:
        return
    if change.kind == BAD or not ref.names_rows():
        result.full = True
        return
    table = ref.table
    if table == "interface" and (id_ := ref.key("id")) is not None:
        result.interface_ids.add(id_)
    elif table == "host" and (id_ := ref.key("id")) is not None:
        result.host_ids.add(id_)
    elif table == "subnet" and server is not None and (id_ := ref.key("id")) is not None:
        result.subnet_ids.add(id_)  # a full pass only if the subnet is (or was) ours
    elif table == "dhcp_server_subnet" and server is not None:
        result.full = result.full or ref.key("dhcp_server_id") in (server, None)
    else:
        result.full = True
