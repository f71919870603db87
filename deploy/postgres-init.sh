#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d):
# Temporal keeps its own databases in the same PostgreSQL server, under its own role, with the
# password the temporal service logs in with (TEMPORAL_DB_USER, TEMPORAL_DB_PASSWORD).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v role="$TEMPORAL_DB_USER" -v password="$TEMPORAL_DB_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password' CREATEDB;
SQL
