-- Array parameters are sent in binary (`%(name)b`): psycopg's text array dumper escapes
-- every element in Python, which cost 2-3 ms of client CPU per 100-row batch (the binary
-- form: about 0.3 ms; bench/bench_outbox.py).

-- name: insert_event
-- description: the app-side write; NOTIFY is transactional, delivered at commit, dropped on
-- rollback. Inserts nothing when the generation was never allocated (no row returned).
WITH ins AS (
    INSERT INTO core.outbox (generation, topic, payload, idempotency_key, trace_parent)
    SELECT %(generation)s, %(topic)s, %(payload)s::jsonb, %(key)s, %(trace)s
    WHERE EXISTS (SELECT 1 FROM core.deployments WHERE generation = %(generation)s)
    RETURNING id
)
SELECT ins.id, pg_notify(%(channel)s, '') FROM ins

-- name: insert_events
-- description: one NOTIFY per statement, not per row; the new ids as one array in input
-- order (identity values are drawn row by row in insertion order); NULL and no NOTIFY
-- when the generation is unknown (nothing inserted)
WITH ins AS (
    INSERT INTO core.outbox (generation, topic, payload, idempotency_key, trace_parent)
    SELECT %(generation)s, t, p::jsonb, k, %(trace)s::text
    FROM unnest(%(topics)b::text[], %(payloads)b::text[], %(keys)b::text[]) AS u (t, p, k)
    WHERE EXISTS (SELECT 1 FROM core.deployments WHERE generation = %(generation)s)
    RETURNING id
), ids AS (
    SELECT array_agg(id ORDER BY id) AS ids FROM ins
)
SELECT ids.ids, CASE WHEN ids.ids IS NOT NULL THEN pg_notify(%(channel)s, '') END
FROM ids

-- name: claim_batch
-- description: the only claim path (ADR 0034): core.outbox_claim_v1 (migration 0013) claims
-- up to `limit` pending, available rows of the bound generation, oldest first, and commits
-- asynchronously.  Run it as a statement of its own (autocommit), never inside the handler
-- transaction.
SELECT * FROM core.outbox_claim_v1(%(generation)s, %(worker_id)s, %(limit)s)

-- name: start_batch
-- description: first statement of a batch's handler transaction (core.outbox_start_v2,
-- migration 0016): marks the rows we still hold done and writes the ledger rows of every
-- (handler, row) the routes give them; returns one row with the ids that were still ours
-- (held), then a row per (handler, row) pair whose key was not handled before: the
-- handler calls to make.  Rolled back with the handlers if any of them fails.
SELECT * FROM core.outbox_start_v2(%(generation)s, %(worker_id)s, %(ids)b::bigint[],
                                   %(topics)s::text[], %(handlers)s::text[])

-- name: mark_handled
-- description: write the ledger rows of one handler for a batch; returns the keys that were new
INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, generation)
SELECT %(handler)s, k, i, %(generation)s
FROM unnest(%(keys)b::text[], %(ids)b::bigint[]) AS u (k, i)
ORDER BY k
ON CONFLICT DO NOTHING
RETURNING idempotency_key

-- name: complete_batch
-- description: the row-by-row redo's settlement: rows we still hold, by id (the primary
-- key or outbox_in_flight_v2, migration 0014)
UPDATE core.outbox
SET status = 'done', finished_at = now(), claimed_by = NULL, last_error = NULL
WHERE id = ANY(%(ids)b::bigint[]) AND generation = %(generation)s
  AND status = 'in_flight' AND claimed_by = %(worker_id)s

-- name: hold_claim
-- description: the row-by-row redo: first statement of each handler transaction.  Locks
-- the row until that transaction ends, so the reaper (which skips locked rows) cannot
-- re-pend it or mark it dead while the handler runs; no row: the claim is no longer ours
SELECT id FROM core.outbox
WHERE id = %(id)s AND generation = %(generation)s
  AND status = 'in_flight' AND claimed_by = %(worker_id)s
FOR UPDATE

-- name: fail_event
-- description: record the error; re-pend with backoff, or dead after max attempts
UPDATE core.outbox
SET status = CASE WHEN attempts >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
    available_at = now() + make_interval(secs => %(delay_s)s),
    last_error = %(error)s,
    claimed_by = NULL,
    finished_at = CASE WHEN attempts >= %(max_attempts)s THEN now() END
WHERE id = %(id)s AND generation = %(generation)s
  AND status = 'in_flight' AND claimed_by = %(worker_id)s
RETURNING status

-- name: kill_event
-- description: dead at once (no handler can ever take it)
UPDATE core.outbox
SET status = 'dead', last_error = %(error)s, claimed_by = NULL, finished_at = now()
WHERE id = %(id)s AND generation = %(generation)s
  AND status = 'in_flight' AND claimed_by = %(worker_id)s

-- name: repend_stale
-- description: the reaper (ADR 0027): own generation only; claimer's heartbeat stale, exited
-- or unknown; never the judge's own claims.  Rows locked by a live transaction are skipped,
-- never waited for (the claimer's handler transaction, or a lost worker's session the
-- reaper is terminating: the next pass takes those).  Judges nobody unless the judge's own
-- heartbeat is fresh.
WITH stale AS (
    SELECT o.id FROM core.outbox AS o
    WHERE o.generation = %(generation)s
      AND o.status = 'in_flight'
      AND (%(me)s::uuid IS NULL OR o.claimed_by IS DISTINCT FROM %(me)s::uuid)
      AND NOT EXISTS (
          SELECT 1 FROM core.workers AS w
          WHERE w.id = o.claimed_by
            AND w.state <> 'exited'
            AND w.last_seen > now() - make_interval(secs => %(stale_after_s)s)
      )
      AND (%(me)s::uuid IS NULL OR EXISTS (
          SELECT 1 FROM core.workers AS judge
          WHERE judge.id = %(me)s::uuid AND judge.state <> 'exited'
            AND judge.last_seen > now() - make_interval(secs => %(self_fresh_s)s)))
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE core.outbox AS o
SET status = CASE WHEN o.attempts >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
    last_error = 'claim reaped: worker ' || coalesce(o.claimed_by::text, '?') || ' stopped heartbeating',
    claimed_by = NULL,
    claimed_at = NULL,
    finished_at = CASE WHEN o.attempts >= %(max_attempts)s THEN now() END
FROM stale
WHERE o.id = stale.id
RETURNING o.id, o.status

-- name: redrive_dead
-- description: operator action: dead rows of one generation back to pending
UPDATE core.outbox
SET status = 'pending', attempts = 0, available_at = now(), finished_at = NULL
WHERE generation = %(generation)s AND status = 'dead'
  AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
RETURNING id

-- name: purge_done
-- description: operator retention action: delete finished rows of one generation
DELETE FROM core.outbox
WHERE generation = %(generation)s AND status = 'done'
  AND finished_at < now() - make_interval(secs => %(older_than_s)s)

-- name: count_by_generation_status
SELECT generation, status, count(*) FROM core.outbox GROUP BY generation, status

-- name: count_live_for_generation
-- description: unfinished work of a generation: outbox rows, plus World Agent turns
SELECT
    (SELECT count(*) FROM core.outbox
     WHERE generation = %(generation)s AND status = 'pending')
    + (SELECT count(*) FROM agent.turns
       WHERE generation = %(generation)s AND status = 'pending'),
    (SELECT count(*) FROM core.outbox
     WHERE generation = %(generation)s AND status = 'in_flight')
    + (SELECT count(*) FROM agent.turns
       WHERE generation = %(generation)s AND status = 'running')

-- name: count_turns_by_generation_status
SELECT generation, status, count(*) FROM agent.turns GROUP BY generation, status

-- name: notify_channel
SELECT pg_notify(%(channel)s, '')

-- name: release_orphans
-- description: after a dropped connection: claims of ours that no lane is working on
UPDATE core.outbox
SET status = 'pending', claimed_by = NULL, claimed_at = NULL
WHERE generation = %(generation)s AND status = 'in_flight' AND claimed_by = %(worker_id)s
  AND NOT (id = ANY(%(keep)b::bigint[]))
