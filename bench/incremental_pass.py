#!/usr/bin/env python3
"""Benchmark the generator's passes at scale: an incremental pass after one change,
the full start-up pass, the state's memory, and a change outside a server's scope.

Starts its own PostgreSQL (fsync on) with scripts/services.py and grows ONE database
through the sizes (10,000 hosts, then up to 100,000, then up to 1,000,000; one
interface each, 10,000 per /16 subnet), vacuumed after each step. At each size a
fresh child process (so its RSS is its own) runs a real ``passes.Pipeline`` (ISC,
``syntax_check=False``, a temporary output file):

- the full pass (``Pipeline.full()``), its read + state build and its file write
  timed apart by wrapping ``read.read_into``, ``Pipeline.document`` and ``apply.apply``;
- per change (one interface's ip UPDATEd and committed): the incremental part, what
  a running server needs (``read.read_named`` + ``State.update`` +
  ``State.take_changes()``: the changed host blocks), then apart the whole-file write
  (``Pipeline.document()`` + ``apply.apply``), wall and CPU time; then whole
  ``Pipeline.incremental(plan)`` calls;
- the RSS after all that (VmRSS and the peak).

At the largest size, a DHCP server row serving 10 of the subnets (100,000 interfaces)
gets a scoped Pipeline: its full pass, and an incremental pass for a change outside
the scope (statements sent, the output file's mtime before and after).

    .venv/bin/python bench/incremental_pass.py [--sizes 10000 100000 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy

from generator import apply, changes, metrics, passes, read, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import services  # noqa: E402  (scripts/services.py)

HOSTS_PER_SUBNET = 10_000  # one /16 each: 10.<subnet>.0.0/16
SCOPE_SUBNETS = 10  # subnets served by the scoped DHCP server: 100,000 interfaces
SPARE_OCTET = 250  # hosts use .10-.249 of each /24: .250-.254 are free addresses
PLOT = ROOT / "docs" / "incremental_pass.png"

GROW = """
SET session_replication_role = replica;  -- bulk load: skip capture triggers
INSERT INTO subnet (id, name, network, gateway, domain_name, dns_servers, pool_start, pool_end,
                    lease_time)
SELECT s, 'bench' || s, ('10.' || s || '.0.0/16')::cidr, ('10.' || s || '.0.1')::inet,
       'bench' || s || '.example.org', ARRAY[('10.' || s || '.0.2')::inet],
       ('10.' || s || '.255.1')::inet, ('10.' || s || '.255.200')::inet, 3600
FROM generate_series(:first_subnet, :last_subnet) AS s;
INSERT INTO host (id, hostname, description)
SELECT i, 'host' || i, 'benchmark host ' || i FROM generate_series(:first, :last) AS i;
INSERT INTO interface (id, host_id, name, mac, ip)
SELECT i, i, 'eth0',
       ('02:00:' || lpad(to_hex((i >> 24) & 255), 2, '0')
        || ':' || lpad(to_hex((i >> 16) & 255), 2, '0')
        || ':' || lpad(to_hex((i >> 8) & 255), 2, '0')
        || ':' || lpad(to_hex(i & 255), 2, '0'))::macaddr,
       ('10.' || (1 + (i - 1) / :per) || '.' || (1 + ((i - 1) % :per) / 240) || '.'
        || (10 + (i - 1) % 240))::inet
FROM generate_series(:first, :last) AS i;
SET session_replication_role = origin;
SELECT setval('host_id_seq', :last), setval('interface_id_seq', :last);
"""

SCOPE = """
INSERT INTO dhcp_server (name) VALUES ('bench-a') RETURNING id
"""

MOVE = """
UPDATE interface SET ip = CASE WHEN ip = %(home)s::inet THEN %(spare)s::inet ELSE %(home)s::inet END
WHERE id = %(id)s
"""


# -- the parent: one cluster, one growing database, a child per size ----------------------


def parent(args: argparse.Namespace) -> int:
    sizes = sorted(args.sizes)
    work = Path(tempfile.mkdtemp(prefix="bench-inc-"))
    cluster = services.PostgresCluster(work / "pg", fsync=True)
    cluster.start()
    rows: list[dict[str, Any]] = []
    scoped: dict[str, Any] | None = None
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
        services.migrate(url)
        loaded = 0
        for size in sizes:
            grow(url, loaded, size)
            loaded = size
            rows.append(run_child(["--child", url, "--size", str(size)], args))
            print(f"{size}: {json.dumps(rows[-1])}", file=sys.stderr)
        if loaded >= HOSTS_PER_SUBNET * (SCOPE_SUBNETS + 1):
            server = make_scope(url)
            scoped = run_child(["--child-scope", url, "--server", str(server)], args)
            print(f"scope: {json.dumps(scoped)}", file=sys.stderr)
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    report(rows, scoped, args)
    if not args.no_plot:
        plot(rows, PLOT)
    return 0


def grow(url: str, loaded: int, size: int) -> None:
    """Add interfaces ``loaded + 1 .. size`` (and their hosts and subnets)."""
    started = time.monotonic()
    first_subnet = -(-loaded // HOSTS_PER_SUBNET) + 1 if loaded else 1
    sql = GROW
    for key, value in (
        (":first_subnet", first_subnet),
        (":last_subnet", -(-size // HOSTS_PER_SUBNET)),
        (":first", loaded + 1),
        (":last", size),
        (":per", HOSTS_PER_SUBNET),
    ):
        sql = sql.replace(key, str(value))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())
        # what autovacuum would do to the fresh rows meanwhile: a steady-state database
        conn.execute("VACUUM (FREEZE, ANALYZE)")
    print(
        f"loaded up to {size:,} interfaces in {time.monotonic() - started:.1f} s", file=sys.stderr
    )


def make_scope(url: str) -> int:
    """A DHCP server serving the first SCOPE_SUBNETS subnets."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(SCOPE).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO dhcp_server_subnet (dhcp_server_id, subnet_id)"
            " SELECT %s, s FROM generate_series(1, %s) AS s",
            (row[0], SCOPE_SUBNETS),
        )
        conn.execute("VACUUM ANALYZE dhcp_server_subnet")
        return int(row[0])


def run_child(argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, __file__, *argv, "--repeat", str(args.repeat)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if child.returncode:
        raise SystemExit(f"child {argv[0]} failed:\n{child.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(child.stdout)
    return result


# -- a child: one size ------------------------------------------------------------------


class Timed:
    """Wraps a function and keeps the wall and CPU seconds of its last call."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.wall = self.cpu = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.wall = time.perf_counter() - wall
            self.cpu = time.process_time() - cpu


def memory_mb() -> tuple[float, float]:
    """(VmRSS, peak RSS) of this process, in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        vm = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return vm / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_pipeline(url: str, output: Path, *, server: int | None = None) -> passes.Pipeline:
    config = settings.ApplySettings(fmt="isc", output=output, syntax_check=False)
    return passes.Pipeline(
        read.make_engine(url), config=config, metrics=metrics.Metrics(), server=server
    )


def timed_full(pipeline: passes.Pipeline) -> dict[str, float]:
    """One ``Pipeline.full()``, with its read + build and its write timed apart."""
    read_into, apply_ = Timed(read.read_into), Timed(apply.apply)
    document = Timed(pipeline.document)
    saved = read.read_into, apply.apply
    read.read_into, apply.apply = read_into, apply_  # type: ignore[assignment]
    pipeline.document = document  # type: ignore[method-assign]
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        assert pipeline.full() is not None, "the full pass failed"
    finally:
        read.read_into, apply.apply = saved  # type: ignore[assignment]
        del pipeline.document
    return {
        "full": time.perf_counter() - wall,
        "full_cpu": time.process_time() - cpu,
        "full_build": read_into.wall,
        "full_write": document.wall + apply_.wall,
    }


class Mover:
    """Moves one interface between its own address and a free one, committed."""

    def __init__(self, url: str, interface: int) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        row = self.conn.execute(
            "SELECT host(ip) FROM interface WHERE id = %s", (interface,)
        ).fetchone()
        assert row is not None
        home = ipaddress.IPv4Address(row[0])
        self.id = interface
        self.home = str(home)
        self.spare = str(ipaddress.IPv4Address(int(home) & ~0xFF | SPARE_OCTET))

    def move(self) -> None:
        self.conn.execute(MOVE, {"home": self.home, "spare": self.spare, "id": self.id})


def child(url: str, *, size: int, repeat: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-inc-out-"))
    output = work / "dhcpd.conf"
    pipeline = make_pipeline(url, output)
    gc.collect()
    rss_start, _ = memory_mb()
    row: dict[str, Any] = {"size": size, **timed_full(pipeline)}
    assert pipeline.state is not None and len(pipeline.state) == size, "not every row kept"
    rss_built, _ = memory_mb()
    mover = Mover(url, size // 2)
    incremental, incremental_cpu, write, write_cpu, whole = [], [], [], [], []
    for _ in range(repeat):
        mover.move()
        wall, cpu = time.perf_counter(), time.process_time()
        named = read.read_named(pipeline.engine, interface_ids={mover.id})
        pipeline.state.update(named.wanted, named.gone)
        taken = pipeline.state.take_changes()
        wall2, cpu2 = time.perf_counter(), time.process_time()
        outcome = apply.apply(pipeline.document().text, config=pipeline.config)
        wall3, cpu3 = time.perf_counter(), time.process_time()
        assert len(taken) == 2 and outcome.changed, (taken, outcome)  # one block out, one in
        incremental.append(wall2 - wall)
        incremental_cpu.append(cpu2 - cpu)
        write.append(wall3 - wall2)
        write_cpu.append(cpu3 - cpu2)
    for _ in range(repeat):  # the same, through the pipeline's own pass
        mover.move()
        before = output.stat().st_mtime_ns
        wall = time.perf_counter()
        assert pipeline.incremental(changes.Plan(interface_ids={mover.id})) is not None
        whole.append(time.perf_counter() - wall)
        assert output.stat().st_mtime_ns != before, "the change did not reach the file"
    gc.collect()
    rss, peak = memory_mb()
    row.update(
        incremental=statistics.median(incremental),
        incremental_max=max(incremental),
        incremental_cpu=statistics.median(incremental_cpu),
        write=statistics.median(write),
        write_cpu=statistics.median(write_cpu),
        pipeline_incremental=statistics.median(whole),
        rss_start_mb=rss_start,
        rss_built_mb=rss_built,
        rss_mb=rss,
        peak_rss_mb=peak,
        file_mb=output.stat().st_size / 2**20,
        load=os.getloadavg()[0],  # the machine is shared: wall time includes waiting
    )
    mover.conn.close()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(row))
    return 0


# -- a child: a scoped generator and a change outside its scope ---------------------------


class Statements:
    """Counts the statements an engine sends (after the pool's liveness ping)."""

    def __init__(self, engine: sqlalchemy.Engine) -> None:
        self.sent: list[str] = []
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.sent.append(statement.split(None, 1)[0])


def scope_child(url: str, *, server: int, repeat: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-inc-scope-"))
    output = work / "dhcpd.conf"
    pipeline = make_pipeline(url, output, server=server)
    row: dict[str, Any] = {"server": server, **timed_full(pipeline)}
    assert pipeline.state is not None
    row["scope_reservations"] = len(pipeline.state)
    statements = Statements(pipeline.engine)
    outside = Mover(url, HOSTS_PER_SUBNET * SCOPE_SUBNETS + 5000)  # in subnet 11
    inside = Mover(url, 5000)  # in subnet 1
    times, reads, sent = [], [], []
    for _ in range(repeat):
        outside.move()
        before = os.stat(output)
        statements.sent.clear()
        wall = time.perf_counter()
        assert pipeline.incremental(changes.Plan(interface_ids={outside.id})) is not None
        times.append(time.perf_counter() - wall)
        after = os.stat(output)
        assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
        sent.append(list(statements.sent))
        wall = time.perf_counter()
        named = read.read_named(pipeline.engine, interface_ids={outside.id}, server=server)
        reads.append(time.perf_counter() - wall)
        assert not named.wanted and named.gone == {outside.id}
    inside_times = []
    for _ in range(repeat):
        inside.move()
        before = os.stat(output)
        wall = time.perf_counter()
        assert pipeline.incremental(changes.Plan(interface_ids={inside.id})) is not None
        inside_times.append(time.perf_counter() - wall)
        assert os.stat(output).st_mtime_ns != before.st_mtime_ns
    row.update(
        outside=statistics.median(times),
        outside_read=statistics.median(reads),
        outside_statements=sent[-1],
        outside_plan=explain(pipeline.engine, outside.id, server),
        inside=statistics.median(inside_times),
        rss_mb=memory_mb()[0],
    )
    for mover in (outside, inside):
        mover.conn.close()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(row))
    return 0


def explain(engine: sqlalchemy.Engine, interface: int, server: int) -> list[str]:
    """The plan nodes of the scoped named-row read for one interface."""
    compiled = read.SCOPED_NAMED_INTERFACES.compile(dialect=engine.dialect)
    params = compiled.construct_params({"ids": [interface], "hosts": [], "server": server})
    with engine.connect() as conn:
        lines = conn.exec_driver_sql("EXPLAIN " + str(compiled), params).scalars().all()
    return [line.strip().removeprefix("-> ").split("  (")[0] for line in lines if "(" in line]


# -- the report -------------------------------------------------------------------------


def report(rows: list[dict[str, Any]], scoped: dict[str, Any] | None, args: Any) -> None:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    print(
        "| interfaces | incremental part (median / max) | its CPU | file write | its CPU"
        " | `Pipeline.incremental` | full pass | of which read + build | of which write"
        " | full pass CPU | VmRSS after | peak RSS | file | load avg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']:,} | **{ms(r['incremental'])}** / {ms(r['incremental_max'])}"
            f" | {ms(r['incremental_cpu'])} | {ms(r['write'])} | {ms(r['write_cpu'])}"
            f" | {ms(r['pipeline_incremental'])} | **{r['full']:.2f} s** | {r['full_build']:.2f} s"
            f" | {r['full_write']:.2f} s | {r['full_cpu']:.2f} s | **{r['rss_mb']:.0f} MB**"
            f" | {r['peak_rss_mb']:.0f} MB | {r['file_mb']:.0f} MB | {r['load']:.1f} |"
        )
    if scoped:
        print()
        print(
            f"Scoped generator ({scoped['scope_reservations']:,} reservations of"
            f" {rows[-1]['size']:,}): full pass {scoped['full']:.2f} s"
            f" (read + build {scoped['full_build']:.2f} s, write {scoped['full_write']:.2f} s);"
            f" change outside the scope: `Pipeline.incremental` {ms(scoped['outside'])}"
            f" (its read alone {ms(scoped['outside_read'])}; statements"
            f" {', '.join(scoped['outside_statements'])}; file mtime unchanged);"
            f" change inside: {ms(scoped['inside'])}; VmRSS {scoped['rss_mb']:.0f} MB."
        )
        print("Plan of the named read: " + " / ".join(scoped["outside_plan"]))
    print(f"\n(repeat {args.repeat}; medians)")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (bench-only dependency)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    series = (
        ("full", "full pass (read + build + write)", "tab:red", "s-"),
        ("full_build", "full pass: read + state build", "tab:orange", "^--"),
        ("write", "whole-file write (document + apply)", "tab:purple", "D-"),
        ("incremental", "incremental part (read_named + update + take_changes)", "tab:blue", "o-"),
    )
    for key, label, color, style in series:
        ax.plot(sizes, [r[key] * 1000 for r in rows], style, color=color, label=label)
    ax.axhline(10, color="tab:blue", linestyle=":", linewidth=1, label="target: incremental 10 ms")
    ax.axhline(15_000, color="tab:red", linestyle=":", linewidth=1, label="target: full 15 s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interfaces in the database (one reservation each)")
    ax.set_ylabel("time per pass (ms, log)")
    ax.set_title("Generator passes against inventory size (ISC, one change per pass)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--child", metavar="DATABASE_URL")
    parser.add_argument("--child-scope", metavar="DATABASE_URL")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--server", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        return child(args.child, size=args.size, repeat=args.repeat)
    if args.child_scope:
        return scope_child(args.child_scope, server=args.server, repeat=args.repeat)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
