-- name: register_worker
INSERT INTO core.workers (id, generation, state, host, pid, version)
VALUES (%(id)s, %(generation)s, 'running', %(host)s, %(pid)s, %(version)s)

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
