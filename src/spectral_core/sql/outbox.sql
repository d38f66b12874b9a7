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
-- description: the only claim path: own generation, pending, available, oldest first.
-- `generation = ANY(ARRAY[g])` with `ORDER BY generation, id` (ADR 0016): an equality would
-- make the generation a constant and let the planner walk the primary key in id order,
-- filtering out every finished row when its statistics say "all pending" (26-33 ms per
-- claim at 25k done rows); the array form keeps the order only the partial index
-- outbox_pending_v1 (generation, id) WHERE pending can give.
-- The claim commits asynchronously (synchronous_commit off for this one statement's
-- transaction): the worker does not wait for a WAL flush before it can start handling. A
-- claim lost to a server crash only re-pends the row with its previous attempt count; the
-- handler transaction commits synchronously and its flush covers the earlier claim record.
WITH async AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), c AS (
    SELECT id FROM core.outbox
    WHERE generation = ANY(ARRAY[%(generation)s::bigint]) AND status = 'pending'
      AND available_at <= now()
    ORDER BY generation, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE core.outbox AS o
SET status = 'in_flight', attempts = o.attempts + 1, claimed_at = now(), claimed_by = %(worker_id)s
FROM c, async
WHERE o.id = c.id
RETURNING o.id, o.generation, o.topic, o.payload, o.idempotency_key, o.attempts, o.created_at,
          o.trace_parent

-- name: start_batch
-- description: first statement of a batch's handler transaction: marks the rows we still
-- hold done and writes the ledger rows of every (handler, row) routed for them; returns one
-- row with the ids that were still ours (held), then a row per (handler, row) pair whose key
-- was not handled before: the handler calls to make.  The ids come once, not on every call
-- row (a LEFT JOIN repeated them: 100 arrays of 100 ids printed and parsed per batch).
-- Rolled back with the handlers if any of them fails.
-- `status || '' = 'in_flight'` (here, in `start_claimed` and `complete_batch`): the same
-- test in a form that does not imply the predicate of outbox_in_flight_v1, so the rows are
-- found by their ids in the primary key.  With the plain equality the planner, whose
-- statistics rarely see rows in flight, walks outbox_in_flight_v1 over every row this
-- worker ever claimed (its dead entries accumulate under one key until a vacuum) and
-- filters all lanes' batches by id: 0.97 vs 1.44 ms per 100 rows after 80k claims.
WITH done AS (
    UPDATE core.outbox
    SET status = 'done', finished_at = now(), claimed_by = NULL, last_error = NULL
    WHERE id = ANY(%(ids)b::bigint[]) AND generation = %(generation)s
      AND status || '' = 'in_flight' AND claimed_by = %(worker_id)s
    RETURNING id
), fresh AS (
    INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, generation)
    SELECT u.h, u.k, u.i, %(generation)s
    FROM unnest(%(handlers)b::text[], %(keys)b::text[], %(ids)b::bigint[]) AS u (h, k, i)
    WHERE u.i IN (SELECT id FROM done)
    ORDER BY u.h, u.k, u.i
    ON CONFLICT DO NOTHING
    RETURNING handler_name, outbox_id
)
SELECT coalesce(array_agg(id), '{}') AS held, NULL AS handler_name, NULL::bigint AS outbox_id
FROM done
UNION ALL
SELECT NULL, handler_name, outbox_id FROM fresh

-- name: prepare_claim_started
-- description: the claim of the one-message cycle (see `claim_started_cycle`), prepared once
-- per connection: $1 generation, $2 limit, $3 worker id.  Besides the claimed rows it leaves
-- their ids in the session setting `spectral.claimed` for `start_claimed`, and always
-- returns at least one row (all NULL when nothing was claimed), so the setting is written
-- on every claim and never names an earlier batch.
PREPARE spectral_claim_started_v1 (bigint, integer, uuid) AS
WITH c AS (
    SELECT id FROM core.outbox
    WHERE generation = ANY(ARRAY[$1]) AND status = 'pending' AND available_at <= now()
    ORDER BY generation, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE core.outbox AS o
    SET status = 'in_flight', attempts = o.attempts + 1, claimed_at = now(), claimed_by = $3
    FROM c
    WHERE o.id = c.id
    RETURNING o.id, o.generation, o.topic, o.payload, o.idempotency_key, o.attempts, o.created_at,
              o.trace_parent
), m AS MATERIALIZED (
    SELECT set_config('spectral.claimed', coalesce(array_agg(id), '{}')::text, false) AS ids
    FROM u
)
SELECT u.id, u.generation, u.topic, u.payload, u.idempotency_key, u.attempts, u.created_at,
       u.trace_parent
FROM m LEFT JOIN u ON true

-- name: prepare_start_claimed
-- description: `start_batch` for the rows the claim of the same message left in
-- `spectral.claimed`, with the routing done in SQL: $1 generation, $2 worker id, $3/$4 the
-- (topic, handler name) pairs of the registry.  Rows of a topic no handler takes are not
-- touched (the caller redoes such a batch on the general path).
-- The id list is read once, as an InitPlan (the scalar sub-select): written as
-- `ANY(current_setting(...)::bigint[])` it is a filter evaluated per row the index scan
-- visits, re-parsing the whole array for each of the worker's in-flight rows (every lane's
-- batch): 4 lanes x 100 rows parsed 400 arrays of 100 ids per cycle, about a third of the
-- server's CPU in a drain (perf: array_in, appendStringInfoChar, pg_strtoint64_safe).
PREPARE spectral_start_claimed_v1 (bigint, uuid, text[], text[]) AS
WITH done AS (
    UPDATE core.outbox
    SET status = 'done', finished_at = now(), claimed_by = NULL, last_error = NULL
    WHERE id = ANY((SELECT current_setting('spectral.claimed')::bigint[])::bigint[])
      AND generation = $1
      AND status || '' = 'in_flight' AND claimed_by = $2 AND topic = ANY($3)
    RETURNING id, topic, idempotency_key
), fresh AS (
    INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, generation)
    SELECT r.h, d.idempotency_key, d.id, $1
    FROM done AS d JOIN unnest($3, $4) AS r (t, h) ON r.t = d.topic
    ORDER BY r.h, d.idempotency_key, d.id
    ON CONFLICT DO NOTHING
    RETURNING handler_name, outbox_id
)
SELECT coalesce(array_agg(id), '{}') AS held, NULL AS handler_name, NULL::bigint AS outbox_id
FROM done
UNION ALL
SELECT NULL, handler_name, outbox_id FROM fresh

-- name: claim_started_cycle
-- description: the one-message cycle (ADR 0015): the claim in its own transaction, committed
-- asynchronously, then the handler transaction opened and started: one round trip from a
-- wake-up to the first handler call.  A simple-query message (parameters are rendered as
-- literals by psycopg.sql); the explicit BEGIN/COMMIT make two transactions of it.  The
-- second stays open for the handlers.
BEGIN;
SET LOCAL synchronous_commit = off;
EXECUTE spectral_claim_started_v1 ({generation}, {limit}, {worker_id});
COMMIT;
BEGIN;
EXECUTE spectral_start_claimed_v1 ({generation}, {worker_id}, {topics}, {handlers})

-- name: prepared_statements
SELECT name FROM pg_prepared_statements WHERE name = ANY(%(names)s)

-- name: mark_handled
-- description: write the ledger rows of one handler for a batch; returns the keys that were new
INSERT INTO core.event_handled (handler_name, idempotency_key, outbox_id, generation)
SELECT %(handler)s, k, i, %(generation)s
FROM unnest(%(keys)b::text[], %(ids)b::bigint[]) AS u (k, i)
ORDER BY k
ON CONFLICT DO NOTHING
RETURNING idempotency_key

-- name: complete_batch
-- description: see `start_batch` for the form of the status test
UPDATE core.outbox
SET status = 'done', finished_at = now(), claimed_by = NULL, last_error = NULL
WHERE id = ANY(%(ids)b::bigint[]) AND generation = %(generation)s
  AND status || '' = 'in_flight' AND claimed_by = %(worker_id)s

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
