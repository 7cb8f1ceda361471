"""Host changes into a running ISC dhcpd over OMAPI: no restart, no gap in service.

The input is what changed between the host blocks dhcpd runs and the new ones (each
block is one ``render_isc.host_block``: its name, MAC, address and host name). Hosts
that went are deleted first, then addresses change in place, then new hosts are added,
so one MAC is never on two hosts (dhcpd refuses that anyway). Every step is
idempotent: a delete of a host dhcpd does not have is done already, and an add that
dhcpd refuses because the name or MAC exists looks at what is there and replaces it
when it differs (never assuming "already exists" means "already right"). Afterwards
each changed MAC is looked up and compared with the render: any mismatch raises, and
the caller falls back to a restart.

Why this order with the file: dhcpd writes each OMAPI change to its lease file and
replays the lease file after the config file at start. Sent before the new file is
written, the changes make a restart at any moment give the database's hosts: the old
file plus the replayed changes, or the new file (whose hosts the replay leaves alone).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from generator import errors, omapi

logger = logging.getLogger(__name__)

_FILE = r'filename "[^"\\\n]*";'
_ARCH_TEST = r"option arch = [0-9a-f]{2}:[0-9a-f]{2}"
_BLOCK = re.compile(
    r"\nhost (?P<name>\S+) \{\n"
    r"\s*hardware ethernet (?P<mac>[0-9a-f:]{17});\n"
    r"\s*fixed-address (?P<ip>[0-9.]+);\n"
    r'(?:\s*option host-name "(?P<hostname>[^"\\]*)";\n)?'
    # boot options (render_isc.boot_statements): only these shapes, nothing else
    r"(?P<boot>(?: *next-server [0-9.]+;\n)?"
    rf"(?: *{_FILE}\n)?"
    rf"(?: *if {_ARCH_TEST}(?: or {_ARCH_TEST})* \{{\n *{_FILE}\n *\}}\n)*)"
    r"\}\n"
)


class Mismatch(omapi.OmapiError):
    """After an apply, dhcpd's hosts differ from the render."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} hosts differ after the OMAPI apply: {problems[0]}")


def host_of(block: str) -> omapi.Host:
    """The host a rendered host block declares."""
    match = _BLOCK.match(block)
    if match is None:
        raise errors.UnsafeValue(f"not a rendered host block: {block[:60]!r}")
    boot = " ".join(line.strip() for line in match["boot"].splitlines())
    return omapi.Host(
        name=match["name"],
        mac=match["mac"],
        ip=match["ip"],
        hostname=match["hostname"],
        statements=boot or None,
    )


@dataclass(frozen=True, kw_only=True)
class Diff:
    """What dhcpd must be told, derived from (block before, block now) pairs."""

    removed: tuple[omapi.Host, ...] = ()
    # same name, MAC, host name and statements; a new address
    moved: tuple[omapi.Host, ...] = ()
    added: tuple[omapi.Host, ...] = ()

    def __len__(self) -> int:
        return len(self.removed) + len(self.moved) + len(self.added)


def diff(changes: Iterable[tuple[str | None, str | None]]) -> Diff:
    """The operations for changes of host blocks (None: no block there)."""
    before: dict[str, omapi.Host] = {}
    now: dict[str, omapi.Host] = {}
    for old, new in changes:
        if old is not None:
            host = host_of(old)
            before[host.name] = host
        if new is not None:
            host = host_of(new)
            now[host.name] = host
    removed, moved, added = [], [], []
    for name, host in before.items():
        if name not in now:
            removed.append(host)
    for name, host in now.items():
        old_host = before.get(name)
        if old_host == host:
            continue  # the same block left one address and came back to it
        if old_host is not None and _same_but_address(old_host, host):
            moved.append(host)
        else:
            if old_host is not None:
                removed.append(old_host)
            added.append(host)
    return Diff(removed=tuple(removed), moved=tuple(moved), added=tuple(added))


def _same_but_address(old: omapi.Host, new: omapi.Host) -> bool:
    """Only the address changed: dhcpd can change it in place (nothing else)."""
    return (old.mac, old.hostname, old.statements) == (new.mac, new.hostname, new.statements)


def send(client: omapi.Client, plan: Diff) -> None:
    """Make dhcpd's hosts match ``plan``, then check them; raises ``omapi.OmapiError``."""
    wanted = {host.mac for host in (*plan.moved, *plan.added)}
    for host in plan.removed:
        client.delete(host.name)  # False: it was gone already
        if host.mac not in wanted:
            # the MAC may be held under another name the file never had (an add that
            # reached dhcpd before a crash, under a host name changed since): it goes too
            holder = client.lookup_by_mac(host.mac)
            if holder is not None:
                client.delete(holder.name)
    for host in plan.moved:
        try:
            client.set_ip(host.name, host.ip)
        except omapi.Unreachable:
            raise
        except omapi.OmapiError:  # dhcpd lost it (a cut lease record): add it whole
            _add(client, host)
    for host in plan.added:
        _add(client, host)
    problems = verify(client, plan)
    if problems:
        raise Mismatch(problems)


def mend(client: omapi.Client, plan: Diff) -> None:
    """After dhcpd restarted on a file that already declares ``plan``'s hosts: look each
    changed MAC up and fix only what differs (a host hidden by a ``deleted`` record of
    its lease file, a removed host replayed from a ``dynamic`` one). One lookup a host
    in the usual case, where ``send`` would try an add that fails and look up again."""
    wanted = {host.mac: host for host in (*plan.moved, *plan.added)}
    for host in plan.removed:
        if host.mac not in wanted:
            client.delete(host.name)
            holder = client.lookup_by_mac(host.mac)
            if holder is not None:
                client.delete(holder.name)
    mended = []
    for host in wanted.values():
        got = client.lookup_by_mac(host.mac)
        if got is not None and (got.name, got.ip) == (host.name, host.ip):
            continue
        if got is not None:
            client.delete(got.name)
        _add(client, host)
        mended.append(host)
    problems = verify(client, Diff(added=tuple(mended)))
    if problems:
        raise Mismatch(problems)


def _add(client: omapi.Client, host: omapi.Host) -> None:
    try:
        client.add(host)
        return
    except omapi.AlreadyExists:
        pass
    existing = client.lookup_by_name(host.name)
    if existing is not None and (existing.mac, existing.ip) == (host.mac, host.ip):
        return  # a previous attempt got there (its answer was lost)
    if existing is not None:
        client.delete(host.name)
    holder = client.lookup_by_mac(host.mac)
    if holder is not None:  # another name holds the MAC: the render says it goes
        client.delete(holder.name)
    client.add(host)


def verify(client: omapi.Client, plan: Diff) -> list[str]:
    """Look every changed MAC up in dhcpd and compare it with the render."""
    problems = []
    wanted = {host.mac: host for host in (*plan.moved, *plan.added)}
    for host in wanted.values():
        got = client.lookup_by_mac(host.mac)
        if got is None or (got.name, got.ip) != (host.name, host.ip):
            seen = "nothing" if got is None else f"{got.name} at {got.ip}"
            problems.append(f"MAC {host.mac}: expected {host.name} at {host.ip}, dhcpd has {seen}")
    for host in plan.removed:
        if host.mac not in wanted and (got := client.lookup_by_mac(host.mac)) is not None:
            problems.append(f"MAC {host.mac}: expected no host, dhcpd has {got.name} at {got.ip}")
    return problems
