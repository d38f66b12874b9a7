-- name: register_worker
-- description: also re-registers a live worker whose row was deleted or marked exited
INSERT INTO core.workers (id, generation, state, host, pid, version)
VALUES (%(id)s, %(generation)s, 'running', %(host)s, %(pid)s, %(version)s)
ON CONFLICT (id) DO UPDATE SET state = 'running', last_seen = now(), exited_at = NULL

-- name: beat_worker
-- description: heartbeat; also records the state (running / reconnecting) and, when given,
-- the worker's metrics snapshot (ADR 0029)
UPDATE core.workers
SET last_seen = now(), state = %(state)s, metrics = coalesce(%(metrics)s::jsonb, metrics),
    reconnects = reconnects + CASE WHEN %(state)s = 'reconnecting' AND state <> 'reconnecting'
                                   THEN 1 ELSE 0 END
WHERE id = %(id)s AND state <> 'exited'
RETURNING id

-- name: mark_worker_exited
-- description: clean shutdown; the worker's recorded sessions are closed with it
WITH s AS (DELETE FROM core.worker_sessions WHERE worker_id = %(id)s)
UPDATE core.workers SET state = 'exited', last_seen = now(), exited_at = now() WHERE id = %(id)s

-- name: record_session
-- description: the backend of a connection the worker uses (pid and start time, ADR 0027),
-- and forget the worker's sessions that ended.  Only when the backend is the one the
-- connection was opened on (`pid`: the process id the server announced at connect): behind
-- a pooler the announced id is the pooler's, the backend a shared one, and nothing is
-- recorded (ADR 0041).  The session is then given the worker's unique application_name,
-- recorded too: the reaper terminates only a backend that still carries it (ADR 0043).
-- Returns whether the backend is the connection's own.
WITH gone AS (
    DELETE FROM core.worker_sessions AS s
    WHERE s.worker_id = %(worker_id)s
      AND NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a
                      WHERE a.pid = s.pid AND a.backend_start = s.backend_start)
), ins AS (
    INSERT INTO core.worker_sessions (worker_id, pid, backend_start, application_name)
    SELECT %(worker_id)s, pid, backend_start, %(application_name)s FROM pg_stat_activity
    WHERE pid = pg_backend_pid() AND pid = %(pid)s
    ON CONFLICT DO NOTHING
)
SELECT CASE WHEN pg_backend_pid() = %(pid)s
            THEN set_config('application_name', %(application_name)s, false) IS NOT NULL
            ELSE false END

-- name: workers_by_generation
-- description: rows of workers seen within the retention; `lost`: not exited, heartbeat
-- older than the stale bound (a derived state, ADR 0027)
SELECT generation, id, state, host, pid, version, started_at, last_seen,
       state <> 'exited' AND last_seen < now() - make_interval(secs => %(stale_after_s)s) AS lost
FROM core.workers
WHERE last_seen > now() - make_interval(secs => %(retention_s)s)
ORDER BY generation, started_at

-- name: worker_snapshots
-- description: the metrics snapshots of the workers that have not exited (ADR 0029)
SELECT generation, metrics FROM core.workers WHERE state <> 'exited' AND metrics IS NOT NULL

-- name: release_all_claims
-- description: graceful shutdown: give back everything we hold (the attempt is not counted)
UPDATE core.outbox
SET status = 'pending', claimed_by = NULL, claimed_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE generation = %(generation)s AND status = 'in_flight' AND claimed_by = %(worker_id)s

-- name: terminate_lost_sessions
-- description: the reaper (ADR 0027): end the recorded server sessions of the workers of its
-- generation that are lost (heartbeat older than the stale bound) or exited, never its
-- own, waiting up to %(wait_ms)s ms for each to end.  A session counts only while its pid,
-- start time and the worker's application_name all match a live backend (a reused pid is
-- never hit, nor a backend that now serves another client, ADR 0043).  Judges nobody
-- unless the judge's own heartbeat is fresh (ADR 0027: after an outage it renews first).
SELECT s.worker_id, s.pid, pg_terminate_backend(a.pid, %(wait_ms)s) AS ended
FROM core.workers AS w
JOIN core.worker_sessions AS s ON s.worker_id = w.id
JOIN pg_stat_activity AS a ON a.pid = s.pid AND a.backend_start = s.backend_start
  AND a.application_name = s.application_name
WHERE w.generation = %(generation)s
  AND w.id IS DISTINCT FROM %(me)s::uuid
  AND (w.state = 'exited' OR w.last_seen < now() - make_interval(secs => %(stale_after_s)s))
  AND (%(me)s::uuid IS NULL OR EXISTS (
      SELECT 1 FROM core.workers AS judge
      WHERE judge.id = %(me)s::uuid AND judge.state <> 'exited'
        AND judge.last_seen > now() - make_interval(secs => %(self_fresh_s)s)))

-- name: prune_workers
-- description: retention (SPECTRAL_WORKER_RETENTION_S): rows of workers, of any generation,
-- not seen for that long, with their recorded sessions; never the caller's own row
WITH gone AS (
    DELETE FROM core.workers
    WHERE last_seen < now() - make_interval(secs => %(retention_s)s)
      AND id IS DISTINCT FROM %(me)s::uuid
    RETURNING id
), s AS (
    DELETE FROM core.worker_sessions AS s USING gone WHERE s.worker_id = gone.id
)
SELECT count(*) FROM gone
