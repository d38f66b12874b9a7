-- name: health_probe
-- description: every database-side health fact in one round trip
SELECT
    (SELECT coalesce(max(number), 0) FROM core.schema_migrations) AS migration_head,
    CASE WHEN to_regclass('core.outbox') IS NULL THEN false
         ELSE has_table_privilege('core.outbox', 'INSERT') END AS outbox_writable,
    (SELECT count(*) FROM core.workers
     WHERE generation = %(generation)s AND state IN ('running', 'reconnecting')
       AND last_seen > now() - make_interval(secs => %(stale_after_s)s)) AS live_workers,
    NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'
        AS session_writable,
    (SELECT count(*) FROM core.api_processes
     WHERE generation = %(generation)s AND state IN ('running', 'reconnecting')
       AND last_seen > now() - make_interval(secs => %(stale_after_s)s)) AS live_api

-- name: backend_pid
-- description: the backend running this statement (against the process id the server
-- announced at connect: a pooler announces its own, ADR 0041)
SELECT pg_backend_pid()

-- name: read_only_session
-- description: the session cannot write: a standby in recovery or a read-only default
SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'
