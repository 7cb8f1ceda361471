"""Checks of a failover pair before anything is written, and the clock the peers share.

A generator reads only its own side of its pair (``model.Failover`` on every subnet of
its ``--server`` scope), but the partner's generator reads the same ``dhcp_failover``
row mirrored: ``partner(side)`` is exactly what it reads. So the classic mistakes of a
pair (two primaries, swapped ports, one name on both peers, a mode the server cannot
run) are caught on either side, from one side, before a file is written. A bad pair is
refused as a whole (``Refused``): a half-right failover peer is worse than the config
in place. The database refuses most of these rows already (migration 0008); these
checks are defence in depth, and, for ISC, a check of the renderer itself: both peers'
preambles are rendered and compared, so a renderer that swaps ports or makes both
peers primary is caught before dhcpd is.

Failover peers compare times (ISC: lease times and the MCLT in the binding updates;
Kea HA: its heartbeats carry the time, it warns past 30 s of skew and stops the HA
service, state ``terminated``, past 60 s). ``clock_skew`` measures this machine's
clock against the database's, which both peers' generators read: two peers within a
few seconds of the database are within a few seconds of each other.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import exc as sa_exc

from generator import errors, model, render_isc, render_options, validate

logger = logging.getLogger(__name__)

# The output format that can run each mode. A pair without a mode runs on either, in
# that server's default mode (model.Failover.effective_mode).
MODE_FORMATS = model.MODE_FORMATS
# Both roles of a pair, in every mode: Kea's standby (hot-standby) is the 'secondary'.
ROLES = ("primary", "secondary")
SPLIT_RANGE = range(0, 257)  # of 256: the primary's share of the pool (ISC)
PORT_RANGE = range(1, 65536)
# Timers and counts with their least allowed value (migration 0008's checks).
TIMER_MINIMUMS = {
    "mclt": 1,
    "max_response_delay": 1,
    "max_unacked_updates": 1,
    "load_balance_max_seconds": 0,
    "heartbeat_delay_ms": 1,
    "max_response_delay_ms": 1,
    "max_ack_delay_ms": 1,
    "max_unacked_clients": 0,
}
# Fields both sides of one pair hold equal (the pair's own columns).
SHARED_FIELDS = ("name", "mode", "split", *TIMER_MINIMUMS)
# Kea HA terminates its HA service with a partner more than 60 s off (a warning at
# 30 s); ISC failover misjudges lease times and the MCLT by the skew. Warn well before.
CLOCK_SKEW_WARNING = 5.0  # seconds
# A pair name and server names: machinedb.is_dhcp_server_name (migration 0006).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)
SHOWN_TEXT_LENGTH = 64  # characters of a bad value quoted in a message

DATABASE_TIME = sqlalchemy.select(
    sqlalchemy.func.extract("epoch", sqlalchemy.func.clock_timestamp())
)


class Refused(errors.GeneratorError):
    """A pair is not fit to render: nothing is written; ``problems`` say why."""

    def __init__(self, problems: Iterable[validate.Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problem.message for problem in self.problems))


def partner(side: model.Failover) -> model.Failover:
    """The partner's side of ``side``'s pair: what its generator reads from the same row."""
    return dataclasses.replace(
        side,
        role=ROLES[1] if side.role == ROLES[0] else ROLES[0],
        server_name=side.peer_name,
        peer_name=side.server_name,
        address=side.peer_address,
        port=side.peer_port,
        peer_address=side.address,
        peer_port=side.port,
    )


def paired(subnets: Iterable[model.Subnet]) -> bool:
    """True if any subnet of the scope belongs to a failover pair."""
    return any(subnet.failover is not None for subnet in subnets)


def check(
    subnets: Iterable[model.Subnet],
    *,
    fmt: str,
    options: render_options.RenderOptions | None = None,
) -> tuple[validate.Problem, ...]:
    """Every rule the scope's pair breaks (empty for a scope without a pair)."""
    ordered = tuple(sorted(subnets, key=lambda subnet: subnet.id))
    sides = {subnet.failover for subnet in ordered}
    if not sides - {None}:
        return ()
    if len(sides) > 1:
        return (_scope_problem(ordered),)
    (side,) = sides
    assert side is not None
    problems = [*check_side(side, fmt=fmt), *check_sides(side, partner(side))]
    if not problems and fmt == "isc":
        problems += check_isc_render(ordered, options=options)
    return tuple(problems)


def refuse_unfit(
    subnets: Iterable[model.Subnet],
    *,
    fmt: str,
    options: render_options.RenderOptions | None = None,
) -> None:
    """Raise ``Refused`` if the scope's pair breaks a rule."""
    problems = check(subnets, fmt=fmt, options=options)
    if problems:
        raise Refused(problems)


def check_side(side: model.Failover, *, fmt: str) -> list[validate.Problem]:
    """The rules one side breaks on its own."""
    found = [*_kind_faults(side, fmt), *_endpoint_faults(side), *_timer_faults(side)]
    return [_problem(rule, side, detail) for rule, detail in found]


def _kind_faults(side: model.Failover, fmt: str) -> list[tuple[str, str]]:
    """The pair's name, its mode against the output format (a pair without a mode fits
    either: it runs in the format's default mode), the role, the peer names."""
    found = []
    if _PLAIN_NAME.fullmatch(side.name) is None:
        found.append(("failover_name_plain", f"pair name {_show(side.name)} is not a plain name"))
    mode = side.effective_mode(fmt)
    if mode not in MODE_FORMATS:
        modes = ", ".join(MODE_FORMATS)
        found.append(("failover_mode_known", f"mode {_show(mode)} is none of {modes}"))
    elif MODE_FORMATS[mode] != fmt:
        detail = f"mode {mode} cannot be rendered as {fmt} (it needs --format"
        found.append(("failover_mode_format", f"{detail} {MODE_FORMATS[mode]})"))
    if side.role not in ROLES:
        detail = f"role {_show(side.role)} does not fit mode {_show(mode)}"
        found.append(("failover_role_known", f"{detail} (primary or secondary)"))
    if side.server_name.lower() == side.peer_name.lower():
        detail = f"both peers are named {_show(side.server_name)}; each needs its own name"
        found.append(("failover_peer_names_distinct", detail))
    return found


def _endpoint_faults(side: model.Failover) -> list[tuple[str, str]]:
    found = []
    for address in (side.address, side.peer_address):
        if not isinstance(address, ipaddress.IPv4Address):
            found.append(("failover_address_ipv4", f"peer address {address} is not IPv4"))
    for port in (side.port, side.peer_port):
        if port not in PORT_RANGE:
            found.append(("failover_port_range", f"port {port} is outside 1..65535"))
    if (side.address, side.port) == (side.peer_address, side.peer_port):
        detail = f"both peers would listen on {side.address} port {side.port}"
        found.append(("failover_endpoints_distinct", detail))
    return found


def _timer_faults(side: model.Failover) -> list[tuple[str, str]]:
    found = []
    if side.split not in SPLIT_RANGE:
        found.append(("failover_split_range", f"split {side.split} is outside 0..256"))
    for field, least in TIMER_MINIMUMS.items():
        value = getattr(side, field)
        if value < least:
            rule = "failover_mclt_positive" if field == "mclt" else "failover_timers_valid"
            found.append((rule, f"{field} {value} is below {least}"))
    return found


def check_sides(mine: model.Failover, theirs: model.Failover) -> list[validate.Problem]:
    """The rules two sides break together: what one peer says of the other must be what
    the other says of itself."""
    found: list[tuple[str, str]] = []
    differing = [f for f in SHARED_FIELDS if getattr(mine, f) != getattr(theirs, f)]
    if differing:
        found.append(("failover_same_pair", f"the peers disagree on {', '.join(differing)}"))
    roles = sorted((mine.role, theirs.role))
    if roles != sorted(ROLES):
        both = (
            f"both peers are {roles[0]}"
            if roles[0] == roles[1]
            else f"the roles are {' and '.join(roles)}"
        )
        found.append(("failover_one_primary", f"{both}; a pair has one primary and one other"))
    for a, b in ((mine, theirs), (theirs, mine)):
        if (a.address, a.port) != (b.peer_address, b.peer_port):
            detail = (
                f"{_show(a.server_name)} listens on {a.address} port {a.port} but"
                f" {_show(b.server_name)} expects it at {b.peer_address} port {b.peer_port}"
            )
            found.append(("failover_endpoints_mirrored", detail))
        if a.server_name != b.peer_name:
            detail = f"{_show(b.server_name)} names its peer {_show(b.peer_name)}, not"
            found.append(("failover_names_mirrored", f"{detail} {_show(a.server_name)}"))
    return [_problem(rule, mine, detail) for rule, detail in found]


def check_isc_render(
    subnets: tuple[model.Subnet, ...], *, options: render_options.RenderOptions | None = None
) -> list[validate.Problem]:
    """Render both peers' preambles and check that they differ only in the ``failover
    peer`` block, and that the two blocks mirror each other: one ``primary;``, ``mclt``
    and ``split`` in the primary's only, ``port``/``peer port`` and the addresses
    crossed. A guard on the renderer: what the database cannot hold, it could write."""
    options = options or render_options.RenderOptions()
    mine = subnets[0].failover
    assert mine is not None
    theirs = partner(mine)
    other = tuple(dataclasses.replace(subnet, failover=theirs) for subnet in subnets)
    texts = (
        render_isc.preamble(subnets, options=options),
        render_isc.preamble(other, options=options),
    )
    details = compare_isc_preambles(*texts, name=mine.name)
    return [_problem("failover_render_mirrored", mine, detail) for detail in details]


def compare_isc_preambles(first: str, second: str, *, name: str) -> list[str]:
    """What is wrong between two peers' ISC preambles (empty: they are a pair)."""
    head = f"failover peer {json.dumps(name)} {{"
    blocks = []
    rests = []
    for text in (first, second):
        lines = text.splitlines()
        if lines.count(head) != 1:
            return [f"a preamble holds {lines.count(head)} {head!r} blocks, not one"]
        start = lines.index(head)
        end = lines.index("}", start)
        blocks.append(_statements(lines[start + 1 : end]))
        rests.append(lines[:start] + lines[end + 1 :])
    problems = []
    if rests[0] != rests[1]:
        problems.append("the two files differ outside the failover peer block")
    primary = [block for block in blocks if "primary" in block]
    if len(primary) != 1 or not any("secondary" in block for block in blocks):
        problems.append(f"{len(primary)} of the two peer blocks say primary, not one")
        return problems
    (main,) = primary
    other = blocks[1] if main is blocks[0] else blocks[0]
    for word in ("mclt", "split"):
        if word not in main or word in other:
            problems.append(f"{word} must be in the primary's block only")
    for own, peers in (("port", "peer port"), ("address", "peer address")):
        if main.get(own) != other.get(peers) or main.get(peers) != other.get(own):
            problems.append(f"{own} and {peers} are not crossed between the peers")
    return problems


def _statements(lines: Iterable[str]) -> dict[str, str]:
    """``{keyword: value}`` of a peer block's one-line statements: ``port 647;`` gives
    ``{"port": "647"}``, ``primary;`` gives ``{"primary": ""}``."""
    found = {}
    for line in lines:
        words = line.strip().rstrip(";").split()
        if len(words) > 1:
            found[" ".join(words[:-1])] = words[-1]
        elif words:
            found[words[0]] = ""
    return found


def _scope_problem(subnets: tuple[model.Subnet, ...]) -> validate.Problem:
    groups: dict[str, list[str]] = {}
    for subnet in subnets:
        pair = "no pair" if subnet.failover is None else f"pair {_show(subnet.failover.name)}"
        groups.setdefault(pair, []).append(str(subnet.id))
    shown = "; ".join(f"subnets {', '.join(ids)}: {pair}" for pair, ids in groups.items())
    detail = f"the subnets of the scope do not all carry the same pair ({shown})"
    row = "the scope's failover pairs"
    kind = "failover_one_pair_per_scope"
    return validate.Problem(kind=kind, row=row, message=f"{row}: {detail} [rule {kind}]")


def _problem(kind: str, side: model.Failover, detail: str) -> validate.Problem:
    row = (
        f"dhcp_failover {_show(side.name)} ({_show(side.server_name)} as {_show(side.role)},"
        f" peer {_show(side.peer_name)})"
    )
    return validate.Problem(kind=kind, row=row, message=f"{row}: {detail} [rule {kind}]")


def _show(text: str) -> str:
    """Quote a database value for a message: one line, ASCII only, bounded length."""
    shown = json.dumps(text[:SHOWN_TEXT_LENGTH], ensure_ascii=True)
    return shown + "..." if len(text) > SHOWN_TEXT_LENGTH else shown


# ---------------------------------------------------------------- clocks


def clock_skew(database_time: Callable[[], float], *, clock: Callable[[], float]) -> float:
    """This machine's clock minus the database's, in seconds (positive: ours is ahead).

    The database's time is read between two readings of ``clock`` and compared with
    their middle, as NTP does: the round trip does not count as skew."""
    before = clock()
    theirs = database_time()
    after = clock()
    return (before + after) / 2 - theirs


def database_time(engine: sqlalchemy.Engine) -> float:
    """The database server's clock (``clock_timestamp()``), as Unix time: one round trip
    on the engine's pooled connection."""
    with engine.connect() as conn:
        value: Any = conn.execute(DATABASE_TIME).scalar_one()
    return float(value)


def measure_skew(
    engine: sqlalchemy.Engine, *, clock: Callable[[], float] = time.time
) -> float | None:
    """``clock_skew`` against the database of ``engine``; None (logged) if it cannot
    be read: the clock is worth a warning, never a failed pass."""
    try:
        return clock_skew(lambda: database_time(engine), clock=clock)
    except (sa_exc.SQLAlchemyError, psycopg.Error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("cannot read the database's clock: %s", first)
        return None


def report_skew(skew: float, *, threshold: float = CLOCK_SKEW_WARNING) -> bool:
    """Log a warning if ``skew`` is past ``threshold``; True if it was."""
    if abs(skew) <= threshold:
        return False
    logger.warning(
        "this machine's clock is %+.1f s off the database's (more than %.0f s): failover"
        " peers compare times; keep both servers on NTP",
        skew,
        threshold,
        extra={"action": "clock_skew", "skew_seconds": round(skew, 3)},
    )
    return True
