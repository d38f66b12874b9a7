-- name: lock_migrations
-- description: serialize migration runners (transaction-scoped: works through a transaction pooler)
SELECT pg_advisory_xact_lock(7262551240391537001)

-- name: create_schema_core
CREATE SCHEMA IF NOT EXISTS core

-- name: create_migrations_ledger
CREATE TABLE IF NOT EXISTS core.schema_migrations (
    number       integer PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    checksum     text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    duration_ms  integer NOT NULL
)

-- name: migrations_ledger_exists
SELECT to_regclass('core.schema_migrations') IS NOT NULL

-- name: select_applied_migrations
SELECT number, name, checksum FROM core.schema_migrations ORDER BY number

-- name: select_migration_head
SELECT coalesce(max(number), 0) FROM core.schema_migrations

-- name: insert_applied_migration
INSERT INTO core.schema_migrations (number, name, checksum, duration_ms)
VALUES (%(number)s, %(name)s, %(checksum)s, %(duration_ms)s)
