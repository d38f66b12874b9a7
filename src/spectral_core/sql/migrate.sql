-- name: lock_migrations
-- description: serialize migration runners (transaction-scoped: works through a transaction pooler)
SELECT pg_advisory_xact_lock(7262551240391537001)

-- name: create_schema_core
CREATE SCHEMA IF NOT EXISTS core

-- name: create_migrations_ledger
-- description: the ledger as it was before 0007 (which turns it into core.migration_ledger
-- description: and leaves a view of spectral's own rows under this name)
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

-- name: migration_sets_ledger_exists
SELECT to_regclass('core.migration_ledger') IS NOT NULL

-- name: select_set_migrations
SELECT number, name, checksum FROM core.migration_ledger
WHERE migration_set = %(migration_set)s ORDER BY number

-- name: insert_set_migration
INSERT INTO core.migration_ledger (migration_set, number, name, checksum, duration_ms)
VALUES (%(migration_set)s, %(number)s, %(name)s, %(checksum)s, %(duration_ms)s)

-- name: select_migration_summary
-- description: the ledger before 0007: spectral's own rows only
SELECT count(*), coalesce(max(number), 0) FROM core.schema_migrations

-- name: select_ledger_sets
SELECT migration_set, count(*), max(number) FROM core.migration_ledger
GROUP BY migration_set ORDER BY migration_set <> 'spectral', migration_set

-- name: migration_backend_pid
SELECT pg_backend_pid()

-- name: set_migration_lock_timeout
-- description: transaction-scoped (SET LOCAL): works through a transaction pooler
SELECT set_config('lock_timeout', %(lock_timeout)s, true)

-- name: select_lock_blockers
-- description: who holds (or queues ahead for) the lock a migration statement waits for
SELECT a.pid, a.state, a.query_start, a.xact_start, a.application_name
FROM pg_stat_activity a
WHERE a.pid = ANY (pg_blocking_pids(%(pid)s))
ORDER BY a.pid
