-- name: register_worker
-- description: also re-registers a live worker whose row was deleted or marked exited
INSERT INTO core.workers (id, generation, state, host, pid, version)
VALUES (%(id)s, %(generation)s, 'running', %(host)s, %(pid)s, %(version)s)
ON CONFLICT (id) DO UPDATE SET state = 'running', last_seen = now(), exited_at = NULL

-- name: beat_worker
-- description: heartbeat; also records the state (running / reconnecting)
UPDATE core.workers
SET last_seen = now(), state = %(state)s,
    reconnects = reconnects + CASE WHEN %(state)s = 'reconnecting' AND state <> 'reconnecting'
                                   THEN 1 ELSE 0 END
WHERE id = %(id)s AND state <> 'exited'
RETURNING id

-- name: mark_worker_exited
UPDATE core.workers SET state = 'exited', last_seen = now(), exited_at = now() WHERE id = %(id)s

-- name: workers_by_generation
SELECT generation, id, state, host, pid, version, started_at, last_seen,
       last_seen < now() - make_interval(secs => %(stale_after_s)s) AS stale
FROM core.workers
WHERE state <> 'exited' OR exited_at > now() - interval '1 day'
ORDER BY generation, started_at

-- name: release_all_claims
-- description: graceful shutdown: give back everything we hold (the attempt is not counted)
UPDATE core.outbox
SET status = 'pending', claimed_by = NULL, claimed_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE generation = %(generation)s AND status = 'in_flight' AND claimed_by = %(worker_id)s
