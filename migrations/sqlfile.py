"""Run a migration's .sql file from migrations/sql/ verbatim.

The text goes to psycopg unparsed (no SQLAlchemy bind-parameter or %-format parsing),
so PL/pgSQL bodies with ':=' and format('%I') stay as written.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).resolve().parent / "sql"


def run(name: str) -> None:
    sql = (SQL_DIR / name).read_text()
    if op.get_context().as_sql:  # offline mode: emit the script
        op.execute(sql)
        return
    driver_connection = op.get_bind().connection.driver_connection
    driver_connection.execute(sql)
