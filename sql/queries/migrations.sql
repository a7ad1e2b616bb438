-- Named statements of the migration runner (pgqml/migrations.py).

-- name: migration_lock
-- Serialise concurrent migrators for the rest of the transaction.
SELECT pg_advisory_xact_lock(7310556291830457681)

-- name: schema_exists
-- Is the bookkeeping table there?
SELECT to_regclass('pgqml.migrations') IS NOT NULL

-- name: create_bookkeeping
-- The schema and the table recording applied migrations.
CREATE SCHEMA IF NOT EXISTS pgqml;
CREATE TABLE IF NOT EXISTS pgqml.migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: applied_migrations
-- Applied migrations, oldest first.
SELECT version, name, checksum FROM pgqml.migrations ORDER BY version

-- name: record_migration
-- Record one applied migration.
INSERT INTO pgqml.migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)
