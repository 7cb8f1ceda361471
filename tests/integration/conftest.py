"""Fixtures for the relay tests: relay subprocesses that never outlive a test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.relay_helpers import RelayProcess

SpawnRelay = Callable[..., RelayProcess]


@pytest.fixture
def spawn_relay(tmp_path: Path) -> Iterator[SpawnRelay]:
    """Start ``cdc-relay`` subprocesses; each is stopped (and its log shown on failure)."""
    started: list[RelayProcess] = []

    def start(
        *,
        db_url: str,
        stomp_url: str,
        destination: str,
        extra: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> RelayProcess:
        log = tmp_path / f"relay-{len(started)}.log"
        relay = RelayProcess(
            db_url=db_url,
            stomp_url=stomp_url,
            destination=destination,
            log=log,
            extra=extra,
            prefix=prefix,
        )
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()
    for relay in started:
        print(f"---- {relay.log.name} ----")
        print(relay.output()[-6000:])
