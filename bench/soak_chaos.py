"""Faults at random moments (seeded): the relay or the generator SIGKILLed and restarted,
the broker (ActiveMQ, or the RabbitMQ node) stopped or crashed and started again,
PostgreSQL restarted (fast or immediate), dhcpd SIGKILLed and started again with the
same files (as a supervisor would) or plainly restarted. One fault at a time; the first
rounds go through every kind."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import soak_dhcpd
import soak_env  # puts scripts/ on sys.path

# isort: split
import services

logger = logging.getLogger("soak.chaos")

VARIANTS = {
    "relay": ("kill",),
    "generator": ("kill",),
    "broker": ("stop", "kill"),
    "postgres": ("fast", "immediate"),
    "dhcpd": ("kill", "restart"),
}
KINDS = tuple(VARIANTS)
SLOW = frozenset({"broker", "postgres"})  # their restarts take seconds of their own
PAUSES = {  # seconds a service stays down, uniformly between the two
    "relay": (0.5, 3.0),
    "generator": (0.5, 3.0),
    "broker": (1.0, 5.0),
    "postgres": (0.5, 3.0),
    "dhcpd": (0.5, 3.0),
}
MIN_LEFT = 2.0  # seconds: no new fault this close to the end
START_ATTEMPTS = 3


@dataclass
class Fault:
    kind: str
    variant: str
    at: float  # seconds since the load started
    wall: str  # UTC time of the fault
    down: float = 0.0  # seconds until the service was back
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(rng: random.Random) -> list[tuple[str, str]]:
    """The first two rounds: every kind once per round, with the variants of the
    broker, PostgreSQL and dhcpd faults swapped between the rounds. The first round
    takes the quick faults first (in random order), so that a short run sees every
    kind; the second round is in random order."""
    first_variant = {kind: rng.choice(variants) for kind, variants in VARIANTS.items()}
    rounds = []
    for round_index in range(2):
        kinds = list(KINDS)
        rng.shuffle(kinds)
        if round_index == 0:
            kinds.sort(key=lambda kind: kind in SLOW)
        for kind in kinds:
            variants = VARIANTS[kind]
            choice = first_variant[kind]
            if round_index == 1 and len(variants) > 1:
                choice = next(v for v in variants if v != choice)
            rounds.append((kind, choice))
    return rounds


@dataclass
class Targets:
    relay: soak_env.Daemon
    generator: soak_env.Daemon
    broker: soak_env.Broker
    cluster: services.PostgresCluster
    dhcpd: soak_dhcpd.Dhcpd
    after_generator_kill: Callable[[], str]  # returns a note for the fault log


class Chaos(threading.Thread):
    def __init__(
        self, targets: Targets, *, seed: int, duration: float, started: float, stop: threading.Event
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.targets = targets
        self.rng = random.Random(f"{seed}-chaos")
        self.duration = duration
        self.started = started
        self.stop = stop
        self.gap = min(10.0, max(2.0, duration / 12))  # seconds between faults, on average
        self.faults: list[Fault] = []
        self.current = ""  # the kind of the fault in progress
        self.errors: list[str] = []

    def run(self) -> None:
        scheduled = plan(self.rng)
        if self.stop.wait(min(3.0, self.gap)):
            return
        while self.duration - self.elapsed() > MIN_LEFT and not self.stop.is_set():
            if scheduled:
                kind, variant = scheduled.pop(0)
            else:
                kind = self.rng.choice(KINDS)
                variant = self.rng.choice(VARIANTS[kind])
            self.inject(kind, variant)
            if self.stop.wait(self.gap * self.rng.uniform(0.5, 1.5)):
                return

    def intervals(self) -> list[tuple[float, float]]:
        """Each fault as (start, end) in ``time.monotonic()`` terms."""
        return [(self.started + f.at, self.started + f.at + f.down) for f in self.faults]

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def inject(self, kind: str, variant: str) -> None:
        fault = Fault(kind, variant, round(self.elapsed(), 2), datetime.now(UTC).isoformat())
        pause = self.rng.uniform(*PAUSES[kind])
        logger.info("fault: %s %s (down for %.1f s)", kind, variant, pause)
        began = time.monotonic()
        self.current = kind
        try:
            if kind in ("relay", "generator"):
                fault.note = self._kill_daemon(kind, pause)
            elif kind == "broker":
                self._bounce_broker(kill=variant == "kill", pause=pause)
            elif kind == "dhcpd":
                fault.note = self._bounce_dhcpd(kill=variant == "kill", pause=pause)
            else:
                self._bounce_postgres(variant, pause)
        except Exception as exc:
            self.errors.append(f"{kind} {variant}: {exc}")
            logger.error("fault %s %s failed: %s", kind, variant, exc)
        self.current = ""
        fault.down = round(time.monotonic() - began, 2)
        logger.info("recovered from %s %s after %.1f s", kind, variant, fault.down)
        self.faults.append(fault)

    def _kill_daemon(self, kind: str, pause: float) -> str:
        daemon = self.targets.relay if kind == "relay" else self.targets.generator
        with daemon.lock:
            daemon.kill()
            note = self.targets.after_generator_kill() if kind == "generator" else ""
            time.sleep(pause)
            daemon.start()
        return note

    def _bounce_broker(self, *, kill: bool, pause: float) -> None:
        self.targets.broker.stop(kill=kill)
        time.sleep(pause)
        _retry(self.targets.broker.start)

    def _bounce_dhcpd(self, *, kill: bool, pause: float) -> str:
        """SIGKILL, a pause, a plain start with the same files unless the generator's
        reload command started it meanwhile; or a plain restart (no pause)."""
        dhcpd = self.targets.dhcpd
        if not kill:
            dhcpd.restart()
            return ""
        with dhcpd.lock:
            dhcpd.kill()
            time.sleep(pause)
            return dhcpd.start_if_stopped()

    def _bounce_postgres(self, mode: str, pause: float) -> None:
        self.targets.cluster.stop(mode)
        time.sleep(pause)
        _retry(self.targets.cluster.start)


def _retry(start: Callable[[], None]) -> None:
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            start()
            return
        except services.ServiceError:
            if attempt == START_ATTEMPTS:
                raise
            time.sleep(2.0)
