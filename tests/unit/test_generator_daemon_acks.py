"""The daemon acknowledges a message only once a render covering it was applied.

The real loop (``Daemon.run``) and the real apply, on a file in a temporary directory;
the broker is a fake consumer, and the database read is replaced by a script of
rendered texts, so the test controls which render the wipe guard or the checker refuses.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from generator import apply, changes, consumer, daemon, passes, read, render, settings
from generator import metrics as metrics_module
from machinedb import change_message as contract
from tests.unit.conftest import require_binary


def host_block(n: int) -> str:
    mac = f"52:54:00:00:00:{n:02x}"
    return f"host h{n}-x {{\n  hardware ethernet {mac};\n  fixed-address 10.0.0.{n};\n}}\n"


def isc_text(hosts: int, extra: str = "") -> str:
    return "# header\n" + "".join(host_block(n) for n in range(1, hosts + 1)) + extra


def delivery(n: int, table: str = "host", txid: int = 500) -> consumer.Delivery:
    body = json.dumps({"table": table, "txid": txid, "captured_at": "2026-01-01T00:00:00+00:00"})
    return consumer.Delivery(
        generation=1, ack_id=f"ack-{n}", headers={"table": table}, body=body, received=0.0
    )


RUN_LIMIT = 10.0  # seconds a scripted run may take before it is stopped


class FakeConsumer:
    """Stands in for ``consumer.Consumer``: hands out queued deliveries, records acks."""

    def __init__(self) -> None:
        self.inbox: list[consumer.Delivery] = []
        self.acked: list[str] = []
        self.connected = False

    def connect(self) -> None:
        self.connected = True

    def get(self, timeout: float) -> consumer.Delivery | None:
        return self.inbox.pop(0) if self.inbox else None

    def drain(self) -> list[consumer.Delivery]:
        found, self.inbox = self.inbox, []
        return found

    def ack(self, deliveries: Iterable[consumer.Delivery]) -> int:
        ids = [d.ack_id for d in deliveries]
        self.acked.extend(ids)
        return len(ids)

    def close(self) -> None:
        self.connected = False


class FakePipeline:
    """Stands in for ``passes.Pipeline``: each pass applies the next scripted text with
    the real apply (wipe guard, checker, reload), as a pass over the database would."""

    def __init__(self, harness: Harness, config: settings.ApplySettings) -> None:
        self.harness = harness
        self.config = config
        self.server = None
        self.state = None
        self.last_suspects: list[object] = []
        self.whole: read.Visibility | None = None
        self.reread_rows: set[tuple[str, int]] = set()  # (table, id) the last pass re-read
        self.kinds: list[str] = []  # "full" or "incremental", pass by pass

    def reread(self, ref: contract.ChangeRef) -> bool:
        return (ref.table, ref.key("id")) in self.reread_rows

    def full(self) -> read.Visibility | None:
        self.kinds.append("full")
        visibility = self._pass()
        self.whole = visibility or self.whole
        return visibility

    def incremental(self, plan: changes.Plan) -> read.Visibility | None:
        self.kinds.append("full" if plan.full else "incremental")
        return self._pass()

    def _pass(self) -> read.Visibility | None:
        text = self.harness.next_text()
        document = render.Document(fmt="isc", text=text)
        ok = passes._apply(document, config=self.config, metrics=self.harness.metrics, check=None)
        return read.Visibility.parse("100:100:") if ok else None


class Harness:
    """A ``daemon.Daemon`` whose passes apply ``texts`` in turn; it stops after the last."""

    def __init__(self, tmp_path: Path, **apply_: object) -> None:
        self.output = tmp_path / "dhcpd.conf"
        self.stop = threading.Event()
        self.metrics = metrics_module.Metrics()
        self.texts: list[str] = []
        self.seen: list[tuple[list[str], float]] = []  # (acked, pending gauge) at each render
        config = settings.Settings(
            database_url="postgresql://nobody@127.0.0.1:1/none",
            stomp_url="stomp://127.0.0.1:1",
            queue="/queue/Consumer.t.VirtualTopic.t",
            window=0.0,
            apply=settings.ApplySettings(fmt="isc", output=self.output, **apply_),  # type: ignore[arg-type]
        )
        self.consumer = FakeConsumer()
        self.pipeline = FakePipeline(self, config.apply)
        self.daemon = daemon.Daemon(
            config,
            stop=self.stop,
            metrics=self.metrics,
            broker=self.consumer,
            pipeline=self.pipeline,  # type: ignore[arg-type]
            backoff=lambda: itertools.repeat(0.0),
        )
        self.on_render: dict[int, list[consumer.Delivery]] = {}  # arrivals during render n

    def next_text(self) -> str:
        n = len(self.seen)
        self.seen.append(
            (list(self.consumer.acked), self.sample("dhcp_generator_pending_messages"))
        )
        self.consumer.inbox.extend(self.on_render.get(n, []))
        if n == len(self.texts) - 1:
            self.stop.set()  # the loop finishes this render (and its acks), then stops
        return self.texts[n]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def renders(self, result: str) -> float:
        return self.sample("dhcp_generator_renders_total", result=result)

    def run(self, texts: list[str]) -> None:
        self.texts = texts
        # a daemon that never gets to its last pass stops here, and the test fails
        timer = threading.Timer(RUN_LIMIT, self.stop.set)
        timer.start()
        try:
            self.daemon.run()
        finally:
            timer.cancel()
        assert len(self.seen) == len(texts), "the daemon stopped before the last render"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield Harness(tmp_path, syntax_check=False)


def test_refused_render_keeps_messages_until_a_render_succeeds(tmp_path: Path) -> None:
    harness = Harness(tmp_path, syntax_check=False, removal_floor=0)
    apply.apply(isc_text(10), config=harness.daemon.config.apply)
    harness.consumer.inbox.extend(delivery(n) for n in range(3))
    harness.on_render[0] = [delivery(3)]  # arrives while the refused render runs
    # 1: the wipe guard refuses (10 -> 2); 2: refused again; 3: a good render
    harness.run([isc_text(2), isc_text(2), isc_text(11)])

    after_first, after_second = harness.seen[1], harness.seen[2]
    assert after_first == ([], 4.0)  # nothing acked; all four still pending
    assert after_second == ([], 4.0)
    assert harness.consumer.acked == ["ack-0", "ack-1", "ack-2", "ack-3"]
    assert harness.sample("dhcp_generator_pending_messages") == 0
    assert harness.renders("refused") == 2
    assert harness.renders("applied") == 1
    assert harness.output.read_text() == isc_text(11)


def test_rejected_render_keeps_messages_until_a_render_succeeds(tmp_path: Path) -> None:
    """The real ``dhcpd -t`` rejects the candidate: the file stays, no ack."""
    require_binary("dhcpd")
    harness = Harness(tmp_path, syntax_check=True)
    apply.apply(isc_text(3), config=harness.daemon.config.apply)
    harness.consumer.inbox.extend(delivery(n) for n in range(2))
    harness.run([isc_text(4, extra="this is { not dhcpd\n"), isc_text(4)])

    assert harness.seen[1] == ([], 2.0)
    assert harness.renders("failed") == 1
    assert harness.consumer.acked == ["ack-0", "ack-1"]
    assert harness.sample("dhcp_generator_pending_messages") == 0
    assert harness.output.read_text() == isc_text(4)


def test_failed_reload_keeps_messages(tmp_path: Path) -> None:
    """A reload that fails (previous file restored and reloaded) is a failed render too."""
    refuse_h4 = "import os, sys; sys.exit('h4-x' in open(os.environ['DHCP_CONFIG']).read())"
    harness = Harness(
        tmp_path, syntax_check=False, reload_command=(sys.executable, "-c", refuse_h4)
    )
    apply.apply(isc_text(3), config=harness.daemon.config.apply)
    harness.consumer.inbox.append(delivery(0))
    harness.run([isc_text(4), isc_text(3)])

    assert harness.seen[1] == ([], 1.0)
    assert harness.renders("failed") == 1
    assert harness.output.read_text() == isc_text(3)
    assert harness.consumer.acked == ["ack-0"]  # the second render found the file current
    assert harness.renders("unchanged") == 1


def test_unrelated_messages_are_acked_at_once(harness: Harness) -> None:
    harness.consumer.inbox.append(delivery(0, table="service"))
    harness.run([isc_text(1)])
    assert harness.seen[0] == (["ack-0"], 0.0)


def interface_delivery(n: int, interface_id: int) -> consumer.Delivery:
    body = json.dumps({"table": "interface", "op": "UPDATE", "pk": {"id": interface_id}})
    return consumer.Delivery(
        generation=1, ack_id=f"ack-{n}", headers={"table": "interface"}, body=body, received=0.0
    )


def test_start_is_a_full_pass_and_row_messages_are_incremental(harness: Harness) -> None:
    harness.on_render[0] = [interface_delivery(0, 7)]
    harness.on_render[1] = [delivery(1, table="rack"), delivery(2, table="subnet")]
    harness.run([isc_text(1), isc_text(2), isc_text(3)])
    assert harness.pipeline.kinds == ["full", "incremental", "full"]
    assert harness.consumer.acked == ["ack-0", "ack-1", "ack-2"]  # the rack one at once
    assert harness.sample("dhcp_generator_messages_total", kind="unrelated") == 1


def txid_delivery(n: int, interface_id: int, txid: int) -> consumer.Delivery:
    body = json.dumps(
        {"table": "interface", "op": "UPDATE", "pk": {"id": interface_id}, "txid": txid}
    )
    return consumer.Delivery(
        generation=1, ack_id=f"ack-{n}", headers={"table": "interface"}, body=body, received=0.0
    )


def test_only_a_full_pass_snapshot_covers_changes(harness: Harness) -> None:
    """An incremental pass re-read only the rows it was told about: a later message
    about another row, committed before that pass's snapshot, still needs a pass."""
    snapshots = iter(["100:100:", "200:200:", "200:200:"])  # full, incremental, incremental

    def visibility() -> read.Visibility:
        return read.Visibility.parse(next(snapshots))

    real_pass = harness.pipeline._pass

    def passing() -> read.Visibility | None:
        return visibility() if real_pass() is not None else None

    harness.pipeline._pass = passing  # type: ignore[method-assign]
    harness.on_render[0] = [txid_delivery(0, 7, txid=150)]
    # arrives after the incremental pass over row 7 (snapshot 200) but is about row 8,
    # committed at 150: it must give a pass of its own, not an ack
    harness.on_render[1] = [txid_delivery(1, 8, txid=150)]
    harness.run([isc_text(1), isc_text(2), isc_text(3)])
    assert harness.pipeline.kinds == ["full", "incremental", "incremental"]
    assert harness.sample("dhcp_generator_messages_covered_total") == 0
    assert harness.consumer.acked == ["ack-0", "ack-1"]
