-- Operator re-drive of dead World Agent turns (issue 17.4).

-- name: redrive_dead_turns
-- description: dead turns of one generation (all, or the named threads) back to pending,
-- within their generation; attempts start again, the checkpoints stay (the next run
-- resumes the graph from its last checkpoint: completed model calls are not repeated);
-- last_error is kept until the turn ends again
UPDATE agent.turns
SET status = 'pending', attempts = 0, available_at = now(), finished_at = NULL,
    claimed_by = NULL, claimed_at = NULL
WHERE generation = %(generation)s AND status = 'dead'
  AND (%(thread_ids)s::text[] IS NULL OR thread_id = ANY(%(thread_ids)s::text[]))
RETURNING thread_id

-- name: list_dead_turns
-- description: what `spectral agent dead` shows: dead turns of one generation, oldest first
SELECT thread_id, org, domain, attempts, finished_at, last_error
FROM agent.turns
WHERE generation = %(generation)s AND status = 'dead'
ORDER BY finished_at, thread_id
LIMIT %(limit)s
