#!/bin/bash
# kea-db-init (docker-compose, profile kea): Kea's PostgreSQL hosts database.
#
# Creates the database KEA_DB_NAME (default kea) on the PostgreSQL that PGHOST, PGUSER
# and PGPASSWORD name (a user that may create databases and roles), gives it Kea 2.2's
# schema with `kea-admin db-init pgsql` (or `db-upgrade` for an older one), and makes
# the two logins of docs/deployment.md: kea_writer (the generator: changes the hosts
# table only) and kea_reader (Kea: reads), with the passwords KEA_WRITER_PASSWORD and
# KEA_READER_PASSWORD. Running it again changes nothing but the passwords.
set -euo pipefail

DB=${KEA_DB_NAME:-kea}
: "${PGHOST:?}" "${PGUSER:?}" "${PGPASSWORD:?}" "${KEA_WRITER_PASSWORD:?}" "${KEA_READER_PASSWORD:?}"
export PGHOST PGUSER PGPASSWORD
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

if [ -z "$("${PSQL[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$DB\""
fi
if [ -z "$("${PSQL[@]}" -d "$DB" -tAc "SELECT to_regclass('public.schema_version')")" ]; then
    kea-admin db-init pgsql -n "$DB" -u "$PGUSER" -p "$PGPASSWORD" -h "$PGHOST"
else
    kea-admin db-upgrade pgsql -n "$DB" -u "$PGUSER" -p "$PGPASSWORD" -h "$PGHOST"
fi

"${PSQL[@]}" -d "$DB" \
    -v writer_password="$KEA_WRITER_PASSWORD" -v reader_password="$KEA_READER_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE kea_writer LOGIN' WHERE NOT EXISTS
    (SELECT 1 FROM pg_roles WHERE rolname = 'kea_writer') \gexec
SELECT 'CREATE ROLE kea_reader LOGIN' WHERE NOT EXISTS
    (SELECT 1 FROM pg_roles WHERE rolname = 'kea_reader') \gexec
ALTER ROLE kea_writer PASSWORD :'writer_password';
ALTER ROLE kea_reader PASSWORD :'reader_password';
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO kea_writer, kea_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO kea_reader;
GRANT SELECT ON schema_version TO kea_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON hosts TO kea_writer;
GRANT USAGE ON SEQUENCE hosts_host_id_seq TO kea_writer;
SQL
echo "kea-db-init: database $DB ready (schema $("${PSQL[@]}" -d "$DB" -tAc "SELECT version || '.' || minor FROM schema_version"))"
