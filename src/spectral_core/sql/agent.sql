-- name: enqueue_turn
-- description: the observe handler's hand-off, in the outbox batch transaction; one turn per thread
INSERT INTO agent.turns (thread_id, generation, org, domain, idempotency_key, outbox_id, observation,
                         trace_parent)
VALUES (%(thread_id)s, %(generation)s, %(org)s, %(domain)s, %(key)s, %(outbox_id)s,
        %(observation)s::jsonb, %(trace)s)
ON CONFLICT (thread_id) DO NOTHING
RETURNING thread_id

-- name: claim_turn
-- description: own generation, pending, available, oldest first; attempts counted at claim
WITH c AS (
    SELECT thread_id FROM agent.turns
    WHERE generation = %(generation)s AND status = 'pending' AND available_at <= now()
    ORDER BY created_at, thread_id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE agent.turns AS t
SET status = 'running', attempts = t.attempts + 1, claimed_by = %(worker_id)s, claimed_at = now()
FROM c
WHERE t.thread_id = c.thread_id
RETURNING t.thread_id, t.generation, t.org, t.domain, t.idempotency_key, t.outbox_id,
          t.observation, t.attempts, t.trace_parent

-- name: finish_turn
-- description: done with its result; only while we still hold the claim
UPDATE agent.turns
SET status = 'done', result = %(result)s::jsonb, finished_at = now(), claimed_by = NULL,
    last_error = NULL
WHERE thread_id = %(thread_id)s AND generation = %(generation)s
  AND status = 'running' AND claimed_by = %(worker_id)s

-- name: fail_turn
-- description: re-pend with backoff, or dead when permanent or out of attempts
UPDATE agent.turns
SET status = CASE WHEN %(permanent)s OR attempts >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
    available_at = now() + make_interval(secs => %(delay_s)s),
    last_error = %(error)s,
    claimed_by = NULL,
    finished_at = CASE WHEN %(permanent)s OR attempts >= %(max_attempts)s THEN now() END
WHERE thread_id = %(thread_id)s AND generation = %(generation)s
  AND status = 'running' AND claimed_by = %(worker_id)s
RETURNING status

-- name: release_turns
-- description: graceful shutdown: unfinished turns back to pending (attempt not counted)
UPDATE agent.turns
SET status = 'pending', claimed_by = NULL, claimed_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE generation = %(generation)s AND status = 'running' AND claimed_by = %(worker_id)s
  AND (%(thread_ids)s::text[] IS NULL OR thread_id = ANY(%(thread_ids)s::text[]))

-- name: repend_stale_turns
-- description: crash recovery, the outbox reaper's rules (ADR 0027): own generation only;
-- the claimer stopped heartbeating (stale, exited or unknown); never the judge's own turns;
-- rows locked by a live transaction are skipped, never waited for (a later pass takes
-- them); nobody is judged unless the judge's own heartbeat is fresh.
WITH stale AS (
    SELECT t.thread_id FROM agent.turns AS t
    WHERE t.generation = %(generation)s
      AND t.status = 'running'
      AND t.claimed_by IS DISTINCT FROM %(me)s::uuid
      AND NOT EXISTS (
          SELECT 1 FROM core.workers AS w
          WHERE w.id = t.claimed_by
            AND w.state <> 'exited'
            AND w.last_seen > now() - make_interval(secs => %(stale_after_s)s)
      )
      AND EXISTS (
          SELECT 1 FROM core.workers AS judge
          WHERE judge.id = %(me)s::uuid AND judge.state <> 'exited'
            AND judge.last_seen > now() - make_interval(secs => %(self_fresh_s)s))
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE agent.turns AS t
SET status = CASE WHEN t.attempts >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
    last_error = 'turn reaped: worker ' || coalesce(t.claimed_by::text, '?')
                 || ' stopped heartbeating',
    claimed_by = NULL,
    claimed_at = NULL,
    finished_at = CASE WHEN t.attempts >= %(max_attempts)s THEN now() END
FROM stale
WHERE t.thread_id = stale.thread_id
RETURNING t.thread_id, t.status

-- name: select_turn
SELECT thread_id, generation, org, domain, idempotency_key, status, attempts, last_error, result
FROM agent.turns
WHERE thread_id = %(thread_id)s

-- name: select_fact
SELECT value FROM agent.world_facts
WHERE org = %(org)s AND domain = %(domain)s AND key = %(key)s

-- name: list_facts
SELECT key, value FROM agent.world_facts
WHERE org = %(org)s AND domain = %(domain)s AND key LIKE %(prefix)s || '%%'
ORDER BY key
LIMIT %(limit)s

-- name: upsert_fact
INSERT INTO agent.world_facts (org, domain, key, value, thread_id)
VALUES (%(org)s, %(domain)s, %(key)s, %(value)s::jsonb, %(thread_id)s)
ON CONFLICT (org, domain, key)
DO UPDATE SET value = EXCLUDED.value, thread_id = EXCLUDED.thread_id, updated_at = now()

-- name: insert_module_draft
-- description: a proposal awaiting operator approval; idempotent per tool call
WITH ins AS (
    INSERT INTO agent.module_drafts (org, domain, action, world_model_version, source, note,
                                     thread_id, tool_call_id)
    VALUES (%(org)s, %(domain)s, %(action)s, %(world_model_version)s, %(source)s, %(note)s,
            %(thread_id)s, %(tool_call_id)s)
    ON CONFLICT (thread_id, tool_call_id) DO NOTHING
    RETURNING id
)
SELECT id FROM ins
UNION ALL
SELECT id FROM agent.module_drafts
WHERE thread_id = %(thread_id)s AND tool_call_id = %(tool_call_id)s
LIMIT 1
