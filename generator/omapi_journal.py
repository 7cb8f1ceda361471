"""Hosts sent to dhcpd over OMAPI that the file in place may not declare yet.

The pipeline sends host changes before it writes the file. A generator stopped in
between leaves dhcpd, and its lease file, with hosts the file does not declare; if the
database drops them meanwhile, no later difference between the file and the database
names them, and dhcpd would serve them for good. So the name and MAC of every host
about to be added are recorded here first (fsynced), and the record is cleared once a
file holding them is in place. On start, a recorded host the file does not declare is
deleted from dhcpd before the first difference is sent; the difference adds it back if
the database still has it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from generator import omapi

SUFFIX = ".omapi-journal"

Entry = tuple[str, str]  # (host declaration name, MAC)


def path_for(output: Path) -> Path:
    return output.with_name(output.name + SUFFIX)


def read(path: Path) -> set[Entry]:
    """The hosts recorded; a missing or unreadable record holds none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    found = set()
    for item in data if isinstance(data, list) else ():
        if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            found.add((item[0], item[1]))
    return found


def record(path: Path, hosts: Iterable[omapi.Host]) -> None:
    """Add ``hosts`` to the record, durably, before they are sent."""
    entries = {(host.name, host.mac) for host in hosts}
    if not entries:
        return
    entries |= read(path)
    staging = path.with_name(f".{path.name}.tmp")
    with open(staging, "w", encoding="utf-8") as out:
        json.dump(sorted(entries), out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staging, path)


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)
