"""A pass that re-read a row covers a later message about that row from the same
transaction (a host and its new interface are two messages of one commit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from generator import changes, metrics, passes, read, settings
from machinedb import change_message as contract
from tests.integration.inventory import seed

pytestmark = pytest.mark.pg


def ref(table: str, id_: int, txid: int) -> contract.ChangeRef:
    body = json.dumps({"pk": {"id": id_}, "txid": txid})
    return contract.parse({"table": table, "op": "INSERT"}, body)


def test_the_host_pass_covers_its_new_interface(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    seed(db)
    engine = read.make_engine(db_url)
    config = settings.ApplySettings(fmt="isc", output=tmp_path / "dhcpd.conf", syntax_check=False)
    pipeline = passes.Pipeline(engine, config=config, metrics=metrics.Metrics())
    try:
        assert pipeline.full() is not None
        with db.transaction():
            db.execute("INSERT INTO host (id, hostname) VALUES (50, 'new1')")
            db.execute(
                "INSERT INTO interface (id, host_id, mac, ip)"
                " VALUES (50, 50, '52:54:00:00:00:50', '10.20.0.50')"
            )
            row = db.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        txid = int(row[0])
        assert pipeline.incremental(changes.Plan(host_ids={50})) is not None
        assert "10.20.0.50" in config.output.read_text()
        assert pipeline.reread(ref("interface", 50, txid))  # covered: no second pass
        assert not pipeline.reread(ref("interface", 1, txid))  # a row it did not read
        assert not pipeline.reread(ref("interface", 50, txid + 1000))  # after its snapshot
    finally:
        engine.dispose()
