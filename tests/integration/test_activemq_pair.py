"""The shipped ActiveMQ shared-store master/slave pair (deploy/activemq/activemq-pair.xml,
scripts/services.py ``ActiveMQPair``): the master is SIGKILLed in the middle of a burst
of 5,000 changes, the slave takes over, and nothing is lost.

The relay and the generator run as the operator runs them, with STOMP_URL listing both
brokers. Afterwards an independent consumer reads a queue declared for it in the
pair's config (Consumer.audit..., which nobody else reads) from the new master and counts
distinct event-ids, and the generator's file must equal a fresh ``--once`` render.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import services
import stomp

from tests.conftest import _state_dir, have_activemq, require
from tests.integration import generator_support as gs
from tests.integration import relay_helpers as h
from tests.integration.conftest import SpawnRelay
from tests.integration.inventory import seed

pytestmark = [pytest.mark.pg, pytest.mark.broker]

TOPIC = "/topic/VirtualTopic.machinedb.changes"  # the pair's declared consumer queues use it
AUDIT = "audit"  # the independent consumer's queue, declared in the pair's config
HOSTS = 2500  # each a host and an interface: 5,000 changes
WRITERS = 4
KILL_AFTER = 1500  # changes written before the master is killed
TAKEOVER_DEADLINE = 30.0  # seconds
DELIVERY_DEADLINE = 90.0  # seconds


@pytest.fixture
def pair() -> Iterator[services.ActiveMQPair]:
    require(have_activemq(), "ActiveMQ (apt-get install activemq)")
    instance = services.ActiveMQPair(_state_dir("activemq-pair"), queues=[AUDIT])
    instance.start()
    try:
        yield instance
    finally:
        instance.destroy()


class PairConsumer(h.Consumer):
    """``relay_helpers.Consumer`` that connects to whichever broker of the pair accepts."""

    def __init__(self, ports: list[int], queue: str) -> None:
        self.ports = ports
        super().__init__(ports[0], queue)

    def _connect(self, deadline: float) -> None:
        end = time.monotonic() + deadline
        while True:
            conn = stomp.Connection12(
                [("127.0.0.1", p) for p in self.ports], reconnect_attempts_max=1
            )
            conn.set_listener("consumer", self)
            try:
                conn.connect(wait=True)
                self._conn = conn
                conn.subscribe(self.queue, id="1", ack="client-individual")
                self._lost.clear()
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.5)


def burst(db_url: str, written: list[int]) -> list[BaseException]:
    """HOSTS transactions from WRITERS threads, each a host and its interface; returns the
    writer threads' errors. ``written[i]`` counts thread i's committed changes."""
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                for n in range(index, HOSTS, WRITERS):
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO host (id, hostname) VALUES (%s, %s)",
                            [10_000 + n, f"pair{n}"],
                        )
                        conn.execute(
                            "INSERT INTO interface (host_id, mac, ip) VALUES (%s, %s, %s)",
                            [
                                10_000 + n,
                                f"52:54:00:02:{n // 256:02x}:{n % 256:02x}",
                                f"10.30.{n // 250}.{2 + n % 250}",
                            ],
                        )
                    written[index] += 2
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads), "writers did not finish"
    return errors


def test_master_killed_mid_burst_the_slave_takes_over_and_nothing_is_lost(
    pair: services.ActiveMQPair,
    db_url: str,
    db: psycopg.Connection[Any],
    spawn_relay: SpawnRelay,
    tmp_path: Path,
) -> None:
    seed(db)
    db.execute(
        "INSERT INTO subnet (name, network, gateway) VALUES ('pair', '10.30.0.0/20', '10.30.0.1')"
    )
    db.execute("DELETE FROM cdc.change")
    h.record_written(db_url)
    out = tmp_path / "dhcpd.conf"
    generator = gs.Daemon(
        [
            "--database-url", db_url, "--stomp-url", pair.url, "--destination", TOPIC,
            "--consumer", "dhcp", "--output", str(out),
            "--reload-command", gs.reload_command(tmp_path / "reloads"),
            "--window", "0.3", "--removal-floor", "0",
        ],
        tmp_path / "generator.log",
    ).start()  # fmt: skip
    try:
        gs.wait_for(out.exists, what=f"the first render\n{generator.output()}")
        relay = spawn_relay(db_url=db_url, stomp_url=pair.url, destination=TOPIC)
        # past its start-up checks (a broker it cannot reach then is a start-up failure)
        h.wait_until(lambda: h.leader_pid(db_url) is not None, deadline=60, what="the relay")
        master = pair.master()
        assert master is not None
        slave = next(m for m in pair.members if m is not master)

        written = [0] * WRITERS
        result: list[list[BaseException]] = []
        writers = threading.Thread(target=lambda: result.append(burst(db_url, written)))
        writers.start()
        h.wait_until(
            lambda: sum(written) >= KILL_AFTER or not writers.is_alive(),
            deadline=60,
            what="the burst",
        )
        assert writers.is_alive(), f"the burst ended before the kill: {result}"
        master.stop(kill=True)
        killed = time.monotonic()
        at_kill = sum(written)
        h.wait_until(slave.accepts, deadline=TAKEOVER_DEADLINE, what="the slave to take over")
        takeover = time.monotonic() - killed
        writers.join(150)
        assert result == [[]], result
        print(f"master SIGKILLed after {at_kill} of {2 * HOSTS} changes; slave took over in "
              f"{takeover:.2f} s")  # fmt: skip
        assert at_kill < 2 * HOSTS, "the burst was over before the kill"
        assert slave.is_slave(), "the surviving broker was a slave before the kill"

        h.wait_until(lambda: h.outbox_count(db_url) == 0, deadline=DELIVERY_DEADLINE,
                     what=f"an empty outbox\n{relay.output()[-3000:]}")  # fmt: skip
        written_ids = h.written_ids(db_url)
        assert len(written_ids) == 2 * HOSTS
        audit = PairConsumer(
            [m.port for m in pair.members], h.consumer_queue(TOPIC, AUDIT)
        )  # declared in the pair's config, read by nobody else
        try:
            h.wait_until(lambda: written_ids <= audit.ids(), deadline=DELIVERY_DEADLINE,
                         what="every change on the independent consumer")  # fmt: skip
            assert audit.ids() == written_ids
            print(f"{len(written_ids)} distinct event-ids, {audit.duplicates()} duplicates")
        finally:
            audit.close()

        expected = tmp_path / "expected.conf"
        done = gs.run_generator("--once", "--database-url", db_url, "--output", str(expected))
        assert done.returncode == 0, done.stderr
        assert expected.read_text().count("\nhost ") == 3 + HOSTS
        gs.wait_for(lambda: out.read_text() == expected.read_text(), deadline=DELIVERY_DEADLINE,
                    what=f"the generator to converge\n{generator.output()[-3000:]}")  # fmt: skip
    finally:
        code = generator.terminate() if generator.alive() else None
        assert code in (0, None), generator.output()[-3000:]
