"""A failover pair the generator cannot render is refused end to end, against a real
PostgreSQL: a Kea hot-standby pair rendered with ``--format isc`` writes nothing and
the log names the pair and the rule. And the clock check of a paired scope reads the
database's clock."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from generator import failover, metrics, passes, read, settings
from tests.integration import generator_support as gs
from tests.integration.inventory import DHCP_SERVERS, seed

pytestmark = pytest.mark.pg

# dhcp-a (primary) and dhcp-b serve lan and mgmt (inventory.DHCP_SERVERS).
PAIR = (
    "INSERT INTO dhcp_failover (id, name, mode, primary_server_id, secondary_server_id,"
    " primary_address, secondary_address) VALUES (1, 'pair-ab', %s, 1, 2, '10.20.0.2', '10.20.0.3')"
)


@pytest.fixture
def servers(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(db)
    db.execute(DHCP_SERVERS)
    return db


def once(db_url: str, out: Path, *, fmt: str, server: str) -> Any:
    return gs.run_generator(
        "--once",
        "--database-url",
        db_url,
        "--format",
        fmt,
        "--server",
        server,
        "--output",
        str(out),
    )


@pytest.mark.parametrize("mode", ["kea-hot-standby", "kea-load-balancing"])
def test_a_kea_pair_rendered_as_isc_is_refused_and_nothing_is_written(
    db_url: str, servers: psycopg.Connection[Any], tmp_path: Path, mode: str
) -> None:
    servers.execute(PAIR, (mode,))
    for server in ("dhcp-a", "dhcp-b"):  # either generator of the pair refuses it
        out = tmp_path / f"{server}.conf"
        done = once(db_url, out, fmt="isc", server=server)
        assert done.returncode == 1
        assert not out.exists()
        assert list(tmp_path.iterdir()) == [], "no candidate or backup file either"
        (line,) = [x for x in done.stderr.splitlines() if "[rule failover_mode_format]" in x]
        assert 'dhcp_failover "pair-ab"' in line
        assert f"mode {mode} cannot be rendered as isc (it needs --format kea)" in line
        assert "refused to render, keeping the config in place" in line


def test_the_same_pair_as_isc_failover_is_written(
    db_url: str, servers: psycopg.Connection[Any], tmp_path: Path
) -> None:
    servers.execute(PAIR, ("isc-failover",))
    texts = []
    for server in ("dhcp-a", "dhcp-b"):
        out = tmp_path / f"{server}.conf"
        done = once(db_url, out, fmt="isc", server=server)
        assert done.returncode == 0, done.stderr
        texts.append(out.read_text())
    assert "  primary;" in texts[0] and "  secondary;" in texts[1]
    assert "failover_" not in "".join(texts)


def test_the_daemons_full_pass_refuses_before_keeping_anything(
    db_url: str, servers: psycopg.Connection[Any], tmp_path: Path
) -> None:
    servers.execute(PAIR, ("kea-hot-standby",))
    engine = read.make_engine(db_url)
    counters = metrics.Metrics()
    out = tmp_path / "dhcpd.conf"
    config = settings.ApplySettings(fmt="isc", output=out, syntax_check=False)
    try:
        server = read.find_server(engine, "dhcp-b")
        pipeline = passes.Pipeline(engine, config=config, metrics=counters, server=server)
        assert pipeline.full() is None
        assert pipeline.state is None and not out.exists()
        refused = counters.registry.get_sample_value(
            "dhcp_generator_renders_total", {"result": "refused"}
        )
        assert refused == 1
        # the pair mended: the next full pass renders it
        servers.execute("UPDATE dhcp_failover SET mode = 'isc-failover'")
        assert pipeline.full() is not None
        assert "  secondary;" in out.read_text()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the clock


def test_the_database_clock_is_read_in_one_round_trip(db_url: str) -> None:
    engine = read.make_engine(db_url)
    try:
        before = time.time()
        theirs = failover.database_time(engine)
        after = time.time()
        # the test's PostgreSQL runs on this machine: same clock
        assert before - 1.0 <= theirs <= after + 1.0
        skew = failover.measure_skew(engine)
        assert skew is not None and abs(skew) < 1.0
    finally:
        engine.dispose()


def test_an_unreachable_database_clock_is_no_failure() -> None:
    engine = read.make_engine("postgresql://nobody@127.0.0.1:1/none")
    try:
        assert failover.measure_skew(engine) is None
    finally:
        engine.dispose()


def test_a_full_pass_of_a_paired_scope_sets_the_skew_gauge(
    db_url: str, servers: psycopg.Connection[Any], tmp_path: Path
) -> None:
    engine = read.make_engine(db_url)
    config = settings.ApplySettings(fmt="isc", output=tmp_path / "dhcpd.conf", syntax_check=False)
    try:
        unpaired = metrics.Metrics()
        server = read.find_server(engine, "mgmt.dhcp")  # in no pair
        assert passes.Pipeline(engine, config=config, metrics=unpaired, server=server).full()
        assert math.isnan(gauge(unpaired))

        servers.execute(PAIR, ("isc-failover",))
        paired = metrics.Metrics()
        server = read.find_server(engine, "dhcp-a")
        assert passes.Pipeline(engine, config=config, metrics=paired, server=server).full()
        assert abs(gauge(paired)) < 1.0  # measured: one clock on this machine
    finally:
        engine.dispose()


def gauge(counters: metrics.Metrics) -> float:
    value = counters.registry.get_sample_value("dhcp_generator_clock_skew_seconds")
    assert value is not None
    return value
