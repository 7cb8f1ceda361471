"""What the soak measured, the checks it makes of it, and the summary it prints."""

from __future__ import annotations

import math
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRAPE_TIMEOUT = 2.0  # seconds


def scrape(port: int) -> dict[str, float]:
    """A Prometheus text page as ``{"name{labels}": value}``; empty when unreachable."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT
        ) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name] = float(value)
        except ValueError:
            continue
    return samples


@dataclass
class MetricsLog:
    """The last page seen from each incarnation (pid) of a daemon: counters restart at
    zero with the process, so run totals are sums over incarnations. A SIGKILL loses
    what changed since the last scrape, so totals are lower bounds."""

    port: int
    pages: dict[int, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def poll(self, pid: int | None) -> dict[str, float]:
        page = scrape(self.port)
        if page and pid is not None:
            with self.lock:
                self.pages[pid] = page
        return page

    def total(self, name: str) -> float:
        with self.lock:
            return sum(page.get(name, 0.0) for page in self.pages.values())


@dataclass(frozen=True)
class Reloads:
    accepted: int
    rejected: int
    last_accepted_sha: str | None


def read_reloads(log: Path) -> Reloads:
    """Lines of the reload wrapper: ``<unix time> accepted|rejected <sha256>``."""
    accepted = rejected = 0
    last = None
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        if parts[1] == "accepted":
            accepted += 1
            last = parts[2]
        else:
            rejected += 1
    return Reloads(accepted, rejected, last)


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def markdown(rows: Sequence[tuple[str, Any]]) -> str:
    lines = ["| figure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def verdict_lines(checks: dict[str, bool]) -> list[str]:
    return [f"{'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()]
