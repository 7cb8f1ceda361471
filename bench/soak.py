#!/usr/bin/env python3
"""Chaos soak: the whole pipeline under a mixed write load while its services are
killed and restarted at random moments; then proof that nothing was lost.

Starts its own PostgreSQL (fsync on) and broker (ActiveMQ, or with ``--broker rabbitmq``
a RabbitMQ node with its STOMP plugin and the consumer queues declared before anything
is published), a migrated database with two DHCP
servers' scopes and an initial inventory, a real ISC dhcpd in a network namespace,
``cdc-relay`` and ``dhcp-generator --server soak`` (host changes over dhcpd's OMAPI,
restarts through a reload command, frequent reconciliations), then for ``--duration``
seconds runs writer threads, probes timed into dhcpd.conf, and a chaos thread. At the
end it waits for the pipeline to drain and for one more reconciliation, and checks:
every outbox id reached an independent consumer of the topic, dhcpd never refused a
config, no reconciliation found a difference, dhcpd serves exactly the database's
reservations of the scope (every MAC the soak ever used looked up over OMAPI), and
the daemon's dhcpd.conf equals a fresh ``dhcp-generator --once`` render byte for byte.
Exit code 0 only if every check passed.

    .venv/bin/python bench/soak.py [--broker activemq|rabbitmq] [--duration 180] [--seed 1]
                                   [--writers 4] [--hosts 300]
                                   [--reconcile-interval 20] [--json results.json]
                                   [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import soak_audit
import soak_chaos
import soak_dhcpd
import soak_env
import soak_load
import soak_report

# isort: split
import services  # scripts/services.py, on sys.path once soak_env is imported

from generator import omapi
from tests.e2e import netns

logger = logging.getLogger("soak")

SETTLE_DEADLINE = 180.0  # seconds for each step of the final drain
QUIET = 3.0  # seconds without a new dhcpd.conf (and nothing pending) that count as drained
MONITOR_EVERY = 0.5  # seconds between looks at the daemons
PROGRESS_EVERY = 30.0  # seconds between progress lines
BULK_SIZE = 1000  # hosts per bulk import, in one transaction
THINK = 0.02  # seconds each writer pauses between transactions
CODE_DIRS = ("cdc", "generator", "machinedb", "migrations")  # what the pipeline runs
SLOWEST_PROBES = 10  # listed with the faults behind each in the JSON results
AFTERMATH = 30.0  # seconds a fault may still delay changes after it ended (back-off cap)
RECONCILE_INTERVAL = 20.0  # seconds between the generator's reconciliations
RECONCILE_SLACK = 25.0  # seconds past the interval to wait for the final one (grace: 10 s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--broker",
        choices=soak_env.BROKERS,
        default=soak_env.BROKERS[0],
        help="the broker the pipeline runs on (default: %(default)s); rabbitmq starts a"
        " RabbitMQ node and runs both daemons with --broker rabbitmq",
    )
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load and faults")
    parser.add_argument("--seed", type=int, default=1, help="seeds the faults and the write mix")
    parser.add_argument("--writers", type=int, default=4, help="writer threads")
    parser.add_argument("--hosts", type=int, default=300, help="hosts in the initial inventory")
    parser.add_argument("--think", type=float, default=THINK, help="writer pause, seconds")
    parser.add_argument("--probe-every", type=float, default=0.5, help="seconds between probes")
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=RECONCILE_INTERVAL,
        help="the generator's --reconcile-interval, seconds",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--workdir", type=Path, help="logs, configs and service data (default: a new temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep service data and a passing run's temp dir"
    )
    parser.add_argument(
        "--audit-consumer",
        default="kea",
        help="consumer queue the audit reads (default: kea, declared by the soak in its"
        " ActiveMQ's config, or on RabbitMQ before anything is published, and unused here:"
        " a declared"
        " queue exists from the broker's first moment, also after a crash, so the topic"
        " never drops the auditor's copy)",
    )
    return parser.parse_args(argv)


class Soak:
    """One run: ``start`` the world, ``run`` the load and faults, ``settle``, ``close``."""

    def __init__(self, args: argparse.Namespace, paths: soak_env.Paths) -> None:
        self.args = args
        self.paths = paths
        self.stats = soak_load.Stats()
        self.book = soak_load.ProbeBook()
        self.load_stop = threading.Event()
        self.watch_stop = threading.Event()
        self.cluster: services.PostgresCluster | None = None
        self.stack = contextlib.ExitStack()  # the network namespaces
        self.net: netns.Link | None = None
        self.dhcpd: soak_dhcpd.Dhcpd | None = None
        self.omapi_key: omapi.Key | None = None
        self.omapi_port = services.free_port()  # free here too: render_once's closed port
        self.audit: soak_dhcpd.Audit | None = None
        self.broker: soak_env.Broker | None = None
        self.auditor: soak_audit.Auditor | None = None
        self.relay: soak_env.Daemon | None = None
        self.generator: soak_env.Daemon | None = None
        self.relay_metrics = soak_report.MetricsLog(services.free_port())
        self.generator_metrics = soak_report.MetricsLog(services.free_port())
        self.watcher = soak_load.FileWatcher(paths.output, self.book, self.watch_stop)
        self.chaos: soak_chaos.Chaos | None = None
        self.threads: list[threading.Thread] = []
        self.db_url = ""
        self.timings: dict[str, float] = {}
        self.unloaded_after_kill = 0
        self.exit_codes: dict[str, int | None] = {}
        self.source = "unknown"

    # ---- start ---------------------------------------------------------------------

    def start(self) -> None:
        began = time.monotonic()
        self.source = source_version()
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        self.net = self.stack.enter_context(netns.link(control=True))
        self.dhcpd = soak_dhcpd.Dhcpd(self.net, self.paths, self.omapi_port)
        self.dhcpd.write_reload_wrapper()
        self.omapi_key = soak_dhcpd.write_key(self.paths.omapi_key)
        logger.info(
            "dhcpd will serve %s in namespace %s, OMAPI at %s",
            self.net.network, self.net.server_ns, self.dhcpd.omapi_address,
        )  # fmt: skip
        self.cluster, self.broker = soak_env.make_services(
            self.paths, self.args.broker, queues=[self.args.audit_consumer]
        )
        logger.info("starting PostgreSQL and %s in %s", self.broker.name, self.paths.root)
        soak_env.start_services(self.cluster, self.broker)
        # before anything is published: RabbitMQ drops (and confirms) what no queue takes
        self.broker.declare_queues([soak_env.GENERATOR_CONSUMER, self.args.audit_consumer])
        self.db_url = soak_env.prepare_database(self.cluster, self.net.network)
        self._load_inventory()
        queue, headers = self.broker.reader(self.args.audit_consumer, prefetch=soak_audit.PREFETCH)
        logger.info("the audit consumer reads %s", queue)
        self.auditor = soak_audit.Auditor(
            self.broker.port, queue, headers=headers, **self.broker.client_options()
        )
        env = soak_env.daemon_env(self.db_url, self.broker.url)
        self.relay = soak_env.relay_daemon(
            env, self.paths, self.relay_metrics.port, broker=self.args.broker
        )
        self.generator = soak_env.generator_daemon(
            env,
            self.paths,
            metrics_port=self.generator_metrics.port,
            omapi=self.dhcpd.omapi_address,
            reconcile_interval=self.args.reconcile_interval,
            broker=self.args.broker,
        )
        self.relay.start()
        self.generator.start()
        self.watcher.start()
        if not soak_env.wait_until(self._drained, deadline=SETTLE_DEADLINE):
            raise RuntimeError("the pipeline did not settle on the initial inventory")
        if not self.dhcpd.running():
            raise RuntimeError(f"dhcpd is not running; see {self.paths.logs}")
        self.timings["setup"] = time.monotonic() - began
        logger.info("pipeline settled on the initial inventory in %.1f s", self.timings["setup"])

    def _load_inventory(self) -> None:
        assert self.net is not None
        rng = random.Random(f"{self.args.seed}-inventory")
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            soak_load.bulk_import(conn, rng, self.args.hosts, prefix="i")
            soak_load.link_hosts(conn, [str(self.net.host(n)) for n in soak_env.LINK_HOSTS])

    # ---- load and faults -------------------------------------------------------------

    def run(self) -> None:
        assert self.relay and self.generator and self.broker and self.cluster and self.dhcpd
        config = soak_load.LoadConfig(
            db_url=self.db_url,
            seed=self.args.seed,
            writers=self.args.writers,
            think=self.args.think,
            base_hosts=self.args.hosts,
            bulk_size=BULK_SIZE,
            first_bulk=min(10.0, self.args.duration / 4),
            bulk_every=30.0,
            probe_every=self.args.probe_every,
        )
        keeper = soak_load.Housekeeper(
            base_hosts=config.base_hosts,
            bulk_size=config.bulk_size,
            first_bulk=config.first_bulk,
            bulk_every=config.bulk_every,
            stats=self.stats,
        )
        self.threads = [
            soak_load.Writer(i, config, keeper, self.stats, self.load_stop)
            for i in range(config.writers)
        ]
        self.threads.append(soak_load.Prober(config, self.book, self.stats, self.load_stop))
        started = time.monotonic()
        targets = soak_chaos.Targets(
            relay=self.relay,
            generator=self.generator,
            broker=self.broker,
            cluster=self.cluster,
            dhcpd=self.dhcpd,
            after_generator_kill=self._check_loaded_after_kill,
        )
        self.chaos = soak_chaos.Chaos(
            targets,
            seed=self.args.seed,
            duration=self.args.duration,
            started=started,
            stop=self.load_stop,
        )
        for thread in [*self.threads, self.chaos]:
            thread.start()
        logger.info("load and faults for %.0f s", self.args.duration)
        self._watch_until(started + self.args.duration)
        self.load_stop.set()
        logger.info("stopping the load; waiting for the fault in progress to finish")
        self.chaos.join()
        for thread in self.threads:
            thread.join(30)
        self.timings["load"] = time.monotonic() - started

    def _watch_until(self, end: float) -> None:
        """Restart crashed daemons and keep their metrics until ``end``."""
        next_progress = time.monotonic() + PROGRESS_EVERY
        while time.monotonic() < end:
            time.sleep(MONITOR_EVERY)
            self._monitor()
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY
                self._progress()

    def _monitor(self) -> None:
        assert self.relay and self.generator and self.dhcpd
        current = self.chaos.current if self.chaos is not None else ""
        outage = current if current in ("broker", "postgres") else ""
        for daemon in (self.relay, self.generator):
            daemon.restart_if_crashed(outage=outage)
        self.dhcpd.restart_if_crashed()
        self.relay_metrics.poll(self.relay.pid)
        self.generator_metrics.poll(self.generator.pid)

    def _progress(self) -> None:
        counts = self.stats.counts()
        committed = sum(n for key, n in counts.items() if key.startswith("committed"))
        faults = len(self.chaos.faults) if self.chaos else 0
        logger.info(
            "progress: %d transactions committed, %d faults, %d probes seen, %d reloads",
            committed,
            faults,
            len(self.book.waits()),
            soak_report.read_reloads(self.paths.reload_log).accepted,
        )

    def _check_loaded_after_kill(self) -> str:
        """After a generator kill: is the file in place the one dhcpd runs (restarted
        with it, or given its host changes over OMAPI), as the generator recorded?"""
        time.sleep(0.5)  # a reload command already running finishes on its own
        if soak_env.sha256_of(self.paths.output) != loaded_record(self.paths):
            self.unloaded_after_kill += 1
            return "dhcpd never got the file in place (no .loaded record of it)"
        return ""

    # ---- settle and compare ------------------------------------------------------------

    def settle(self) -> dict[str, Any]:
        """Bring everything up, wait for the pipeline to drain, compare with a fresh render."""
        assert self.relay and self.generator and self.broker and self.cluster and self.auditor
        began = time.monotonic()
        if not soak_env.postgres_up(self.db_url):
            self.cluster.start()
        if self.broker.pid() is None:
            self.broker.start()
        self._monitor()
        outbox_empty = soak_env.wait_until(
            lambda: soak_env.scalar(self.db_url, "SELECT count(*) FROM cdc.change") == 0,
            deadline=SETTLE_DEADLINE,
        )
        written = self._written_ids()
        auditor = self.auditor
        soak_env.wait_until(lambda: written <= auditor.ids(), deadline=SETTLE_DEADLINE)
        quiet = soak_env.wait_until(self._drained, deadline=SETTLE_DEADLINE)
        reconciled = self._wait_for_reconciliation()
        quiet = quiet and soak_env.wait_until(self._drained, deadline=SETTLE_DEADLINE)
        self.timings["settle"] = time.monotonic() - began
        began = time.monotonic()
        self.audit = self._audit_dhcpd()
        self.timings["omapi_audit"] = time.monotonic() - began
        fresh_code = soak_env.render_once(self.db_url, self.paths, omapi_port=self.omapi_port)
        return {
            "outbox_empty": outbox_empty,
            "generator_quiet": quiet,
            "reconciled_at_rest": reconciled,
            "written": written,
            "fresh_exit_code": fresh_code,
        }

    def _wait_for_reconciliation(self) -> bool:
        """One reconciliation of the drained pipeline, by the generator running now."""
        assert self.generator
        generator = self.generator

        def count() -> float:
            return self.generator_metrics.poll(generator.pid).get(RECONCILIATIONS, -1.0)

        before = count()
        logger.info("waiting for a reconciliation at rest (%.0f so far)", max(before, 0))
        return soak_env.wait_until(
            lambda: count() > max(before, 0),
            deadline=self.args.reconcile_interval + RECONCILE_SLACK,
            every=0.5,
        )

    def _audit_dhcpd(self) -> soak_dhcpd.Audit:
        """Every MAC the soak ever used, looked up in the running dhcpd over OMAPI."""
        assert self.dhcpd and self.omapi_key
        expected = scope_reservations(self.db_url)
        every_mac = (soak_load.mac_for(n) for n in range(1, soak_load.last_serial() + 1))
        result = soak_dhcpd.audit(self.dhcpd, self.omapi_key, expected, every_mac)
        logger.info(
            "OMAPI audit: %d MACs looked up in %.1f s, %d reservations served right of %d,"
            " %d problems",
            result.looked_up, result.seconds, result.served_right, result.expected,
            result.problem_count,
        )  # fmt: skip
        return result

    def _written_ids(self) -> set[int]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return {int(r[0]) for r in conn.execute("SELECT id FROM soak_written")}

    def _drained(self) -> bool:
        """Outbox empty, nothing pending in the generator, the file unchanged for a while."""
        assert self.generator
        if not self.paths.output.exists():
            return False
        page = self.generator_metrics.poll(self.generator.pid)
        if page.get("dhcp_generator_pending_messages", 1.0) != 0.0:
            return False
        if soak_env.scalar(self.db_url, "SELECT count(*) FROM cdc.change") != 0:
            return False
        if self.book.never_seen():
            return False
        return time.monotonic() - self.watcher.last_change >= QUIET

    # ---- close ---------------------------------------------------------------------------

    def stop_daemons(self) -> None:
        """SIGTERM both daemons (they must exit 0), the generator first; dhcpd goes on
        until ``close``."""
        for daemon in (self.generator, self.relay):
            if daemon is not None and daemon.proc is not None:
                self.exit_codes[daemon.name] = daemon.stop()

    def close(self) -> None:
        """Stop everything this run started; safe to call more than once."""
        self.load_stop.set()
        self.watch_stop.set()
        if self.chaos is not None and self.chaos.is_alive():
            self.chaos.join(120)
        for thread in [*self.threads, self.watcher]:
            if thread.is_alive():
                thread.join(30)
        for daemon in (self.generator, self.relay):
            if daemon is not None:
                daemon.stop()
        if self.dhcpd is not None:
            try:
                self.dhcpd.stop()
            except RuntimeError as exc:  # the namespace's deletion kills it anyway
                logger.error("stopping dhcpd: %s", exc)
        self.stack.close()  # deletes the namespaces (and kills what still runs in them)
        if self.auditor is not None:
            self.auditor.close()
        if self.broker is not None:
            self.broker.close(keep=self.args.keep)
        if self.cluster is not None:
            if self.args.keep:
                self.cluster.stop("fast")
            else:
                self.cluster.destroy()


def source_version() -> str:
    """The commit the daemons ran from, marked when their code had local changes."""
    git = ["git", "-C", str(soak_env.ROOT)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", *CODE_DIRS],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} with local changes" if changed else commit


RECONCILIATIONS = "dhcp_generator_reconciliations_total"
RECONCILE_DIFFERENCES = "dhcp_generator_reconcile_differences_total"

# The scope's reservations as the contract defines them (DESIGN.md): an interface with
# an address, of an enabled host, inside a DHCP-enabled subnet the server serves.
SCOPE_RESERVATIONS_SQL = """
SELECT h.hostname, i.mac::text, host(i.ip)
FROM interface i
JOIN host h ON h.id = i.host_id
JOIN subnet s ON i.ip << s.network AND s.dhcp_enabled
JOIN dhcp_server_subnet ds ON ds.subnet_id = s.id
JOIN dhcp_server d ON d.id = ds.dhcp_server_id
WHERE d.name = %s AND h.enabled
"""


def scope_reservations(db_url: str) -> dict[str, soak_dhcpd.Reservation]:
    """MAC -> the reservation dhcpd must serve for it, straight from the database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(SCOPE_RESERVATIONS_SQL, [soak_env.SERVER]).fetchall()
    return {
        mac: soak_dhcpd.Reservation(soak_dhcpd.declaration_name(hostname, mac), ip)
        for hostname, mac, ip in rows
    }


def loaded_record(paths: soak_env.Paths) -> str | None:
    """The sha256 the generator recorded for the file dhcpd runs (``<file>.loaded``)."""
    try:
        return paths.output.with_name(paths.output.name + ".loaded").read_text().strip()
    except FileNotFoundError:
        return None


def fault_counts(faults: list[soak_chaos.Fault]) -> dict[str, int]:
    return dict(sorted(Counter(f"{f.kind} {f.variant}" for f in faults).items()))


def mean_seconds(metrics: soak_report.MetricsLog, histogram: str) -> float | None:
    count = metrics.total(f"{histogram}_count")
    return metrics.total(f"{histogram}_sum") / count if count else None


def slowest_probes(
    book: soak_load.ProbeBook, chaos: soak_chaos.Chaos, *, outside_faults: bool = False
) -> list[dict[str, Any]]:
    """The slowest probes, each with the faults that may explain its wait: those that
    began before it was seen and ended at most ``AFTERMATH`` seconds before its commit
    (reconnect back-off outlasts a fault)."""
    probes = book.seen(avoiding=chaos.intervals() if outside_faults else ())
    probes.sort(key=lambda p: p.wait, reverse=True)
    slowest = []
    for probe in probes[:SLOWEST_PROBES]:
        committed = probe.committed - chaos.started
        seen = committed + probe.wait
        nearby = [
            f"{f.kind} {f.variant} at {f.at:.1f} s, down {f.down:.1f} s"
            for f in chaos.faults
            if f.at <= seen and f.at + f.down >= committed - AFTERMATH
        ]
        slowest.append(
            {
                "probe": probe.name,
                "committed_at": round(committed, 2),
                "wait": round(probe.wait, 2),
                "faults": nearby,
            }
        )
    return slowest


def file_diff(a: Path, b: Path, limit: int = 40) -> list[str]:
    try:
        left, right = a.read_text().splitlines(), b.read_text().splitlines()
    except FileNotFoundError as exc:
        return [str(exc)]
    return list(difflib.unified_diff(left, right, str(a), str(b), lineterm=""))[:limit]


def wait_figures(waits: list[float]) -> dict[str, float | int | None]:
    return {
        "count": len(waits),
        "p50": soak_report.percentile(waits, 0.50),
        "p99": soak_report.percentile(waits, 0.99),
        "max": max(waits) if waits else None,
    }


def probe_figures(book: soak_load.ProbeBook, chaos: soak_chaos.Chaos) -> dict[str, Any]:
    waits = wait_figures(book.waits())
    return {
        **waits,
        "count": len(book.probes),
        "seen": waits["count"],
        "never_seen": len(book.never_seen()),
        "commit_in_doubt": book.unsure,
        "slowest": slowest_probes(book, chaos),
        "outside_faults": {
            **wait_figures(book.waits(avoiding=chaos.intervals())),
            "slowest": slowest_probes(book, chaos, outside_faults=True),
        },
    }


def outbox_figures(written: set[int], auditor: soak_audit.Auditor) -> dict[str, Any]:
    delivered = auditor.ids()
    return {
        "written": len(written),
        "delivered": len(delivered & written),
        "missing": len(written - delivered),
        "missing_ids": sorted(written - delivered)[:50],
        "unexpected": len(delivered - written),
        "duplicates": auditor.duplicates(),
        "auditor_reconnects": auditor.reconnects,
    }


def final_figures(paths: soak_env.Paths, fresh_exit_code: int) -> dict[str, Any]:
    final_sha = soak_env.sha256_of(paths.output)
    identical = fresh_exit_code == 0 and final_sha == soak_env.sha256_of(paths.fresh)
    text = paths.output.read_text() if paths.output.exists() else ""
    return {
        "identical": identical,
        "fresh_exit_code": fresh_exit_code,
        "reservations": sum(1 for line in text.splitlines() if line.startswith("host ")),
        "dhcpd_loaded_final": final_sha is not None and loaded_record(paths) == final_sha,
        "diff": [] if identical else file_diff(paths.output, paths.fresh),
    }


def omapi_figures(audit: soak_dhcpd.Audit | None) -> dict[str, Any]:
    if audit is None:
        return {"equal": False, "error": "no audit ran"}
    return {
        "equal": audit.equal,
        "reservations_in_database": audit.expected,
        "served_right": audit.served_right,
        "macs_looked_up": audit.looked_up,
        "problems": audit.problem_count,
        "first_problems": audit.problems,
        "error": audit.error,
        "seconds": round(audit.seconds, 1),
    }


def generator_figures(metrics: soak_report.MetricsLog) -> dict[str, Any]:
    renders = {
        result: int(metrics.total(f'dhcp_generator_renders_total{{result="{result}"}}'))
        for result in ("applied", "unchanged", "failed", "refused", "db_unavailable")
    }
    seconds = {
        stage: mean_seconds(metrics, f"dhcp_generator_{stage}_seconds")
        for stage in ("render", "apply")
    }
    applies = {
        kind: int(metrics.total(f'dhcp_generator_applies_total{{kind="{kind}"}}'))
        for kind in ("omapi", "restart", "unchanged")
    }
    return {
        "renders": renders,
        "generator_seconds": seconds,
        "applies": applies,
        "omapi_fallbacks": int(metrics.total("dhcp_generator_omapi_fallbacks_total")),
        "omapi_mismatches": int(metrics.total("dhcp_generator_omapi_mismatches_total")),
        "reconciliations": int(metrics.total(RECONCILIATIONS)),
        "reconcile_differences": int(metrics.total(RECONCILE_DIFFERENCES)),
    }


def checks(figures: dict[str, Any], settled: dict[str, Any]) -> dict[str, bool]:
    """The verdicts; the run passes only if every one holds."""
    outbox, final, reloads = figures["outbox"], figures["final"], figures["reloads"]
    daemons = figures["daemons"].values()
    return {
        "every outbox id reached the audit consumer (missing = 0)": outbox["missing"] == 0,
        "dhcpd never refused a config it was restarted with": reloads["rejected"] == 0,
        "final dhcpd.conf identical to a fresh --once render": final["identical"],
        "dhcpd runs the final dhcpd.conf (the generator's .loaded record)": final[
            "dhcpd_loaded_final"
        ],
        "dhcpd serves exactly the database's reservations (OMAPI, every MAC)": figures[
            "omapi_audit"
        ]["equal"],
        "reconciliations ran, one of them at rest": figures["reconciliations"] > 0
        and bool(settled["reconciled_at_rest"]),
        "no reconciliation found a difference": figures["reconcile_differences"] == 0,
        "every probe reached dhcpd.conf": figures["probes"]["never_seen"] == 0,
        "pipeline drained (outbox empty, generator quiet)": bool(
            settled["outbox_empty"] and settled["generator_quiet"]
        ),
        "dhcpd restarted by the generator at least once": reloads["accepted"] > 0,
        "every fault kind injected": set(soak_chaos.KINDS) <= set(figures["fault_kinds"]),
        "no fault failed to recover": not figures["chaos_errors"],
        "no daemon crashed (dhcpd included)": not any(d["crashes"] for d in daemons)
        and not figures["dhcpd"]["crashes"],
        "daemons exit 0 on SIGTERM": all(d["exit_code"] == 0 for d in daemons),
        "no unexpected database errors": not figures["unexpected_errors"],
    }


def collect(soak: Soak, settled: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the run, and the checks made of them."""
    assert soak.auditor and soak.chaos and soak.relay and soak.generator and soak.dhcpd
    reloads = soak_report.read_reloads(soak.paths.reload_log)
    faults = soak.chaos.faults
    figures: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": soak.source,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "broker": soak.args.broker,
        "seed": soak.args.seed,
        "duration": soak.args.duration,
        "writers": soak.args.writers,
        "initial_hosts": soak.args.hosts,
        "timings": {k: round(v, 1) for k, v in soak.timings.items()},
        "writes": soak.stats.counts(),
        "unexpected_errors": soak.stats.unexpected,
        "faults": [f.as_dict() for f in faults],
        "fault_counts": fault_counts(faults),
        "fault_kinds": sorted({f.kind for f in faults}),
        "chaos_errors": soak.chaos.errors,
        "outbox": outbox_figures(settled["written"], soak.auditor),
        "probes": probe_figures(soak.book, soak.chaos),
        "reloads": {"accepted": reloads.accepted, "rejected": reloads.rejected},
        **generator_figures(soak.generator_metrics),
        "relay_published": int(soak.relay_metrics.total("cdc_published_total")),
        "file_versions_seen": soak.watcher.versions,
        "unloaded_after_generator_kill": soak.unloaded_after_kill,
        "final": final_figures(soak.paths, settled["fresh_exit_code"]),
        "omapi_audit": omapi_figures(soak.audit),
        "daemons": {
            d.name: {
                "starts": d.starts,
                "crashes": d.crashes,
                "refused_starts": d.refused_starts,
                "exit_code": soak.exit_codes.get(d.name),
            }
            for d in (soak.relay, soak.generator)
        },
        "dhcpd": {"starts_by_soak": soak.dhcpd.starts, "crashes": soak.dhcpd.crashes},
    }
    figures["checks"] = checks(figures, settled)
    figures["passed"] = all(figures["checks"].values())
    return figures


def summary(figures: dict[str, Any]) -> str:
    writes, timings = figures["writes"], figures["timings"]
    outbox, probes, final = figures["outbox"], figures["probes"], figures["final"]
    audit = figures["omapi_audit"]
    committed = sum(n for key, n in writes.items() if key.startswith("committed"))
    refused = [f"{n} {k}" for k, n in writes.items() if k.startswith(("refused", "conflict"))]
    faults = [f"{kind} x{n}" for kind, n in figures["fault_counts"].items()]
    waits = " / ".join(soak_report.seconds(probes[key]) for key in ("p50", "p99", "max"))
    calm = probes["outside_faults"]
    calm_waits = " / ".join(soak_report.seconds(calm[key]) for key in ("p50", "p99", "max"))
    machine = figures["machine"]
    rows = [
        ("command", f"`{figures['command']}`"),
        ("broker", figures["broker"]),
        ("date", figures["date"]),
        ("source", figures["source"]),
        ("machine", f"{machine['cpus']} cores, {machine['platform']}"),
        ("load and faults", f"{timings.get('load', 0):.0f} s, {figures['writers']} writers"),
        ("transactions committed", committed),
        ("of which bulk imports of 1,000 hosts", writes.get("committed bulk import", 0)),
        ("of which trims (10 hosts)", writes.get("committed trim", 0)),
        ("refused by a database rule or conflict", ", ".join(refused) or 0),
        ("cut off by a restart (not committed)", writes.get("interrupted by a restart", 0)),
        ("faults injected", ", ".join(faults)),
        ("outbox ids written", outbox["written"]),
        ("delivered to the audit consumer", outbox["delivered"]),
        ("missing", outbox["missing"]),
        ("duplicates (redelivered)", outbox["duplicates"]),
        ("probes committed / seen in dhcpd.conf", f"{probes['count']} / {probes['seen']}"),
        ("commit to dhcpd.conf, p50 / p99 / max", waits),
        (f"same, the {calm['count']} probes whose wait overlapped no fault", calm_waits),
        ("dhcpd restarts by the generator (dhcpd started)", figures["reloads"]["accepted"]),
        ("configs dhcpd refused to start with", figures["reloads"]["rejected"]),
        (
            "applies: over OMAPI / restart / unchanged",
            " / ".join(str(n) for n in figures["applies"].values()),
        ),
        (
            "OMAPI fallbacks to a restart / mismatches",
            f"{figures['omapi_fallbacks']} / {figures['omapi_mismatches']}",
        ),
        (
            "reconciliations / differences found",
            f"{figures['reconciliations']} / {figures['reconcile_differences']}",
        ),
        (
            "renders: applied / unchanged / failed / refused / db down (lower bounds)",
            " / ".join(str(n) for n in figures["renders"].values()),
        ),
        ("changes the relay published (lower bound)", figures["relay_published"]),
        (
            "generator: mean read+render / write+check+reload",
            " / ".join(soak_report.seconds(v) for v in figures["generator_seconds"].values()),
        ),
        ("generator killed before dhcpd loaded its file", figures["unloaded_after_generator_kill"]),
        ("reservations in the final file", final["reservations"]),
        ("final file identical to a fresh render", "yes" if final["identical"] else "NO"),
        (
            "OMAPI audit: MACs looked up / reservations served right of the database's",
            f"{audit.get('macs_looked_up', 0)} / {audit.get('served_right', 0)} of"
            f" {audit.get('reservations_in_database', 0)} ({audit.get('seconds', 0)} s)",
        ),
        ("dhcpd served differently from the database", audit.get("problems", "-")),
        ("setup / settle", f"{timings.get('setup', 0):.0f} s / {timings.get('settle', 0):.0f} s"),
    ]
    lines = [soak_report.markdown(rows), "", *soak_report.verdict_lines(figures["checks"])]
    if final["diff"]:
        lines += ["", "dhcpd.conf vs fresh render:", *final["diff"]]
    if audit.get("first_problems") or audit.get("error"):
        lines += ["", "dhcpd vs the database:", *audit.get("first_problems", [])]
        lines += [audit["error"]] if audit.get("error") else []
    if figures["unexpected_errors"]:
        lines += ["", "unexpected database errors:", *figures["unexpected_errors"]]
    if figures["chaos_errors"]:
        lines += ["", "faults that failed:", *figures["chaos_errors"]]
    return "\n".join(lines)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # cleans up the same way, whichever signal it was


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout
    )
    for noisy in ("stomp.py", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    missing = soak_env.missing_prerequisites(args.broker)
    if missing:
        print(f"soak: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, _interrupt)
    temporary = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="machinedb-soak-")) if temporary else args.workdir
    if any((root / name).exists() for name in ("pg", "activemq", "rabbitmq", "logs")):
        print(f"soak: {root} holds an earlier run; give a new --workdir", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, soak_env.Paths(root.resolve()))
    try:
        soak.start()
        soak.run()
        settled = soak.settle()
        soak.stop_daemons()
        figures = collect(soak, settled)
    except BaseException:
        print(f"soak: stopped early; logs kept in {root}", file=sys.stderr, flush=True)
        raise
    finally:
        soak.close()
    print(summary(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    if figures["passed"] and temporary and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"logs and configs kept in {root}", flush=True)
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
