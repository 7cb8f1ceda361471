"""Real services for the test suite: a throwaway PostgreSQL cluster and ActiveMQ broker.

A test that needs a service the machine lacks is skipped, unless CI=true: in CI a
missing service is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import services  # noqa: E402  (scripts/services.py, shared with the local run)

IN_CI = os.environ.get("CI", "").lower() == "true"
TEMPLATE_DB = "machinedb_template"


def require(available: bool, what: str) -> None:
    """Skip when a real service is missing locally; fail under CI=true."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not installed")
    pytest.skip(f"{what} is not installed")


def require_postgres() -> None:
    """PostgreSQL's server binaries (see ``require``)."""
    try:
        services.pg_bin()
    except services.ServiceError:
        require(False, "PostgreSQL server binaries")


def have_activemq() -> bool:
    return (services.ACTIVEMQ_HOME / "bin" / "activemq.jar").exists() and bool(shutil.which("java"))


def _state_dir(prefix: str) -> Path:
    # not under pytest's tmp_path: that is mode 0700 and the postgres user must enter it
    return Path(tempfile.mkdtemp(prefix=f"machinedb-{prefix}-"))


def alembic_config(database_url: str) -> Config:
    config: Config = services.alembic_config(database_url)
    return config


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[services.PostgresCluster]:
    require_postgres()
    cluster = services.PostgresCluster(_state_dir("pg"), fsync=False)
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def template_db(pg_cluster: services.PostgresCluster) -> str:
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    command.upgrade(alembic_config(pg_cluster.url(TEMPLATE_DB)), "head")
    return TEMPLATE_DB


@pytest.fixture
def new_database(pg_cluster: services.PostgresCluster) -> Iterator[Callable[[str | None], str]]:
    """Create databases (empty, or cloned from a template) dropped after the test."""
    created: list[str] = []

    def make(template: str | None = None) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            clause = f" TEMPLATE {template}" if template else ""
            conn.execute(f"CREATE DATABASE {name}{clause}")
        created.append(name)
        return pg_cluster.url(name)

    yield make
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        for name in created:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_url(template_db: str, new_database: Callable[[str | None], str]) -> str:
    """A fresh, fully migrated machine database for one test."""
    return new_database(template_db)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the test's database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def broker() -> Iterator[services.ActiveMQBroker]:
    """One ActiveMQ for the session; tests use their own destinations."""
    require(have_activemq(), "ActiveMQ (apt-get install activemq)")
    instance = services.ActiveMQBroker(_state_dir("activemq"))
    instance.start()
    yield instance
    instance.destroy()


@pytest.fixture
def broker_factory() -> Iterator[Callable[[], services.ActiveMQBroker]]:
    """Private brokers for tests that stop or restart them."""
    require(have_activemq(), "ActiveMQ (apt-get install activemq)")
    started: list[services.ActiveMQBroker] = []

    def make() -> services.ActiveMQBroker:
        instance = services.ActiveMQBroker(_state_dir("activemq"))
        instance.start()
        started.append(instance)
        return instance

    yield make
    for instance in started:
        instance.destroy()


@pytest.fixture
def private_pg() -> Iterator[services.PostgresCluster]:
    """A private PostgreSQL cluster for tests that restart it (migrated database 'machinedb')."""
    require_postgres()
    cluster = services.PostgresCluster(_state_dir("pg"), fsync=False)
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE machinedb")
    command.upgrade(alembic_config(cluster.url("machinedb")), "head")
    yield cluster
    cluster.destroy()


@pytest.fixture
def unique_destination() -> str:
    """A change topic of the test's own, so tests sharing a broker never see each other."""
    return f"/topic/VirtualTopic.test{uuid.uuid4().hex[:10]}"
