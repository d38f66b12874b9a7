-- Automatic retention (issue 17.3, ADR 0030).  The pruner runs in every worker; each batch
-- is one transaction that first takes a transaction-level advisory try-lock, so at most
-- one pruner deletes at a time in a database and nobody ever waits for it.  Each batch
-- examines a bounded window of rows (a keyset walk on a primary key, `LIMIT %(batch)s`)
-- and deletes only the finished rows of that window that are old enough and belong to a
-- prunable generation.  The DELETE is driven by an array of the window's keys
-- (`= ANY(ARRAY(...))`: an index or TID scan); a join to the window let the planner pick
-- a sequential scan of the whole table when its statistics saw no old rows.  `pending`, `in_flight` and `dead` rows, and pending, running or
-- dead turns, are never deleted.

-- name: retention_try_lock
-- description: one pruner per database at a time; never waits (false: someone else prunes).
-- Also sets, for this transaction only, the batch's lock timeout (`lock_timeout_ms`: done
-- rows are not locked by the hot path, so a wait means something unusual: skip the batch)
-- and `synchronous_commit = off` (a prune lost in a crash is redone by the next pass; a
-- transaction that relied on it and committed durably flushed it too: ADR 0030).
SELECT pg_try_advisory_xact_lock(7262551240391537017),
       set_config('lock_timeout', %(lock_timeout_ms)s::int::text, true),
       set_config('synchronous_commit', 'off', true)

-- name: prunable_generations
-- description: the generations whose finished rows may be pruned: the newest allocated one
-- (it serves), and every generation that is drained (no pending or in-flight outbox row,
-- no pending or running turn).  An older generation with live work (being drained during a
-- cutover, or stranded) keeps every row until it is drained.  Each NOT EXISTS is one probe
-- of a partial index (outbox_pending_v1, outbox_in_flight_v2, turns_pending_v1,
-- turns_running_v1).
SELECT d.generation
FROM core.deployments AS d
WHERE d.generation = (SELECT max(generation) FROM core.deployments)
   OR (NOT EXISTS (SELECT 1 FROM core.outbox AS o
                   WHERE o.generation = d.generation AND o.status = 'pending')
       AND NOT EXISTS (SELECT 1 FROM core.outbox AS o
                       WHERE o.generation = d.generation AND o.status = 'in_flight')
       AND NOT EXISTS (SELECT 1 FROM agent.turns AS t
                       WHERE t.generation = d.generation AND t.status = 'pending')
       AND NOT EXISTS (SELECT 1 FROM agent.turns AS t
                       WHERE t.generation = d.generation AND t.status = 'running'))
ORDER BY d.generation

-- name: prune_outbox_batch
-- description: the next window of `batch` outbox rows by id after `after`; deletes its done
-- rows finished before the cutoff in a prunable generation.  Returns the window's last id,
-- how many rows it held, how many were deleted, and whether its newest row was created
-- after the cutoff (ids follow creation order: the sweep can stop there).
WITH win AS (
    SELECT id, generation, status, finished_at, created_at
    FROM core.outbox
    WHERE id > %(after)s
    ORDER BY id
    LIMIT %(batch)s
), gone AS (
    DELETE FROM core.outbox AS o
    WHERE o.id = ANY(ARRAY(
              SELECT id FROM win
              WHERE status = 'done'
                AND finished_at < now() - make_interval(secs => %(older_than_s)s)
                AND generation = ANY(%(generations)s::bigint[])))
      AND o.status = 'done'
    RETURNING o.id
)
SELECT (SELECT max(id) FROM win),
       (SELECT count(*) FROM win),
       (SELECT count(*) FROM gone),
       coalesce((SELECT max(created_at) FROM win)
                >= now() - make_interval(secs => %(older_than_s)s), true)

-- name: prune_ledger_batch
-- description: the next window of `batch` ledger rows by primary key after
-- (`after_handler`, `after_key`); deletes those handled before the cutoff in a prunable
-- generation whose outbox row is gone or done (a row that can still be delivered, pending,
-- in flight or dead, keeps its handlers' ledger rows whatever their age).
WITH win AS (
    SELECT ctid AS tid, handler_name, idempotency_key, outbox_id, generation, handled_at
    FROM core.event_handled
    WHERE (handler_name, idempotency_key) > (%(after_handler)s, %(after_key)s)
    ORDER BY handler_name, idempotency_key
    LIMIT %(batch)s
), gone AS (
    DELETE FROM core.event_handled AS e
    WHERE e.ctid = ANY(ARRAY(
        SELECT w.tid FROM win AS w
        WHERE w.handled_at < now() - make_interval(secs => %(older_than_s)s)
          AND w.generation = ANY(%(generations)s::bigint[])
          AND NOT EXISTS (SELECT 1 FROM core.outbox AS o
                          WHERE o.id = w.outbox_id AND o.status <> 'done')))
    RETURNING 1
), last AS (
    SELECT handler_name, idempotency_key FROM win
    ORDER BY handler_name DESC, idempotency_key DESC
    LIMIT 1
)
SELECT (SELECT handler_name FROM last),
       (SELECT idempotency_key FROM last),
       (SELECT count(*) FROM win),
       (SELECT count(*) FROM gone)

-- name: prune_turns_batch
-- description: the next window of `batch` turns by thread after `after`; deletes the done
-- turns finished before the cutoff in a prunable generation, with their LangGraph
-- checkpoints (checkpoints, blobs, writes of the same thread).  Pending, running and dead
-- turns keep their rows and checkpoints (a dead turn's re-drive resumes from them).
WITH win AS (
    SELECT thread_id, generation, status, finished_at
    FROM agent.turns
    WHERE thread_id > %(after)s
    ORDER BY thread_id
    LIMIT %(batch)s
), gone AS (
    DELETE FROM agent.turns AS t
    WHERE t.thread_id = ANY(ARRAY(
              SELECT thread_id FROM win
              WHERE status = 'done'
                AND finished_at < now() - make_interval(secs => %(older_than_s)s)
                AND generation = ANY(%(generations)s::bigint[])))
      AND t.status = 'done'
    RETURNING t.thread_id
), c AS (
    DELETE FROM agent.checkpoints AS x
    WHERE x.thread_id = ANY(ARRAY(SELECT thread_id FROM gone))
), b AS (
    DELETE FROM agent.checkpoint_blobs AS x
    WHERE x.thread_id = ANY(ARRAY(SELECT thread_id FROM gone))
), w AS (
    DELETE FROM agent.checkpoint_writes AS x
    WHERE x.thread_id = ANY(ARRAY(SELECT thread_id FROM gone))
)
SELECT (SELECT max(thread_id) FROM win),
       (SELECT count(*) FROM win),
       (SELECT count(*) FROM gone)
