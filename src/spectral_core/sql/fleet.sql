-- name: register_api_process
-- description: also re-registers a live API process whose row was deleted or marked exited
INSERT INTO core.api_processes (id, generation, state, host, pid, version)
VALUES (%(id)s, %(generation)s, 'running', %(host)s, %(pid)s, %(version)s)
ON CONFLICT (id) DO UPDATE SET state = 'running', last_seen = now(), exited_at = NULL

-- name: beat_api_process
-- description: heartbeat of an API process; returns the live API processes of the whole
-- fleet (every generation: a cutover serves both) and this process's rank among them
-- (ordered by id), from which the process takes its share of every tenant limit (ADR 0032)
WITH me AS (
    UPDATE core.api_processes SET last_seen = now(), state = 'running'
    WHERE id = %(id)s AND state <> 'exited'
    RETURNING id
), live AS (
    SELECT id FROM core.api_processes
    WHERE state <> 'exited' AND last_seen > now() - make_interval(secs => %(stale_after_s)s)
      AND id <> %(id)s
)
SELECT (SELECT count(*) FROM me) AS found,
       (SELECT count(*) FROM live) + 1 AS live,
       (SELECT count(*) FROM live WHERE id < %(id)s) AS rank

-- name: mark_api_process_exited
-- description: clean shutdown
UPDATE core.api_processes SET state = 'exited', last_seen = now(), exited_at = now()
WHERE id = %(id)s

-- name: prune_api_processes
-- description: retention (SPECTRAL_WORKER_RETENTION_S): rows of API processes, of any
-- generation, not seen for that long; never the caller's own row
WITH gone AS (
    DELETE FROM core.api_processes
    WHERE last_seen < now() - make_interval(secs => %(retention_s)s)
      AND id IS DISTINCT FROM %(me)s::uuid
    RETURNING id
)
SELECT count(*) FROM gone

-- name: api_processes_by_generation
-- description: rows of API processes seen within the retention; `lost` as for workers
SELECT generation, id, state, host, pid, version, started_at, last_seen,
       state <> 'exited' AND last_seen < now() - make_interval(secs => %(stale_after_s)s) AS lost
FROM core.api_processes
WHERE last_seen > now() - make_interval(secs => %(retention_s)s)
ORDER BY generation, started_at

-- name: server_connections
-- description: the server's connection limit, its superuser reserve and client backends now
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
