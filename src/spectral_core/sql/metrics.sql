-- The queue gauges of GET /metrics (spectral_core.metrics.queue, ADR 0029).  Every count
-- reads a partial index that holds only the rows it counts (pending, in flight, dead), so
-- a scrape costs in proportion to the live work, never to the finished rows that make up
-- almost all of core.outbox; `done` is not counted per generation (that would be a scan):
-- the table's row estimate from pg_class stands in for it.  The plans are checked in
-- tests/integration/test_metrics_queue.py.

-- name: metrics_outbox
-- description: per generation: pending (with the age of the oldest, found by its id in
-- the pending index and read by primary key), in flight, dead
WITH pending AS (
    SELECT generation, count(*) AS n, min(id) AS oldest
    FROM core.outbox WHERE status = 'pending' GROUP BY generation
)
SELECT p.generation, 'pending' AS status, p.n,
       extract(epoch FROM now() - o.created_at)::float8 AS oldest_age_s
FROM pending AS p JOIN core.outbox AS o ON o.id = p.oldest
UNION ALL
SELECT generation, 'in_flight', count(*), NULL
FROM core.outbox WHERE status = 'in_flight' GROUP BY generation
UNION ALL
SELECT generation, 'dead', count(*), NULL
FROM core.outbox WHERE status = 'dead' GROUP BY generation

-- name: metrics_turns
-- description: World Agent turns per generation: pending (with the oldest's age), running, dead
SELECT generation, 'pending' AS status, count(*),
       extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_s
FROM agent.turns WHERE status = 'pending' GROUP BY generation
UNION ALL
SELECT generation, 'running', count(*), NULL
FROM agent.turns WHERE status = 'running' GROUP BY generation
UNION ALL
SELECT generation, 'dead', count(*), NULL
FROM agent.turns WHERE status = 'dead' GROUP BY generation

-- name: metrics_workers
-- description: every worker not exited (a small table: one row per process start, pruned
-- by retention), with its heartbeat age and its last metrics snapshot
SELECT id, generation, state, extract(epoch FROM now() - last_seen)::float8 AS age_s,
       reconnects, metrics
FROM core.workers
WHERE state <> 'exited'

-- name: metrics_api_processes
-- description: API processes not exited, per generation, split by a fresh or stale
-- heartbeat (ADR 0032)
SELECT generation,
       CASE WHEN last_seen < now() - make_interval(secs => %(stale_after_s)s) THEN 'lost'
            ELSE state END AS state,
       count(*)
FROM core.api_processes
WHERE state <> 'exited'
GROUP BY 1, 2

-- name: metrics_estimates
-- description: the planner's row estimates (-1: never analyzed), no scan
SELECT c.relname, c.reltuples::float8
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE (n.nspname, c.relname) IN (('core', 'outbox'), ('core', 'event_handled'),
                                 ('agent', 'turns'))
