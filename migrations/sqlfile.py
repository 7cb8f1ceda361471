"""Run a migration's .sql file from migrations/sql/ verbatim.

Online, the text goes to psycopg unparsed (no SQLAlchemy bind-parameter or %-format
parsing), so PL/pgSQL bodies with ':=' and format('%I') stay as written. Offline
(``alembic upgrade head --sql``), the text is written to the script as it is, so the
output applies with psql unchanged.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import op

SQL_DIR = Path(__file__).resolve().parent / "sql"


def run(name: str) -> None:
    sql = (SQL_DIR / name).read_text()
    context = op.get_context()
    if context.as_sql:
        # Not op.execute(): it compiles the text as a SQLAlchemy text() construct for
        # psycopg's pyformat paramstyle, which doubles every '%' (format('%s') in PL/pgSQL).
        context.impl.static_output(sql.rstrip())
        return
    driver_connection = op.get_bind().connection.driver_connection
    if not isinstance(driver_connection, psycopg.Connection):
        raise TypeError(f"migrations need a psycopg 3 connection, not {driver_connection!r}")
    driver_connection.execute(sql)
