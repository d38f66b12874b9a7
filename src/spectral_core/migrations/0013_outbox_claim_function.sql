-- The one claim path as versioned functions (issue 20.1, ADR 0034).
--
-- core.outbox_claim_v1 claims up to p_limit pending, available rows of one generation,
-- oldest first, for one worker; core.outbox_start_v1 is the first statement of a batch's
-- handler transaction (marks the rows still held done, writes the ledger rows, returns the
-- handler calls to make).  Every caller, direct or behind a transaction pooler, runs the
-- same `SELECT * FROM core.outbox_claim_v1(...)`: no session state, no PREPARE, no custom
-- setting.  A later change of either body is a new function (_v2) in a new migration, so a
-- generation still draining on older code keeps the body it was tested with.
--
-- The predicates are written plainly (`generation = p_generation`, `status = ...`).  Plan
-- stability: `SET enable_seqscan = off` on both functions, so a plan made while the
-- outbox looked empty (statistics taken on an empty table, a cached generic plan) still
-- reads the indexes once the table has grown; outbox_pending_id_v1 (migration 0001) keeps
-- the claim's id-ordered walk inside the pending rows whatever the statistics say, and
-- outbox_in_flight_v2 (migration 0014) lets the start find its rows by id under its
-- worker, whichever index the planner picks.  The claim commits asynchronously: it sets
-- synchronous_commit off for its caller's transaction, which is the claim alone (the
-- handler transaction commits synchronously and its flush covers the claim record).
CREATE FUNCTION core.outbox_claim_v1(p_generation bigint, p_worker_id uuid, p_limit integer)
RETURNS TABLE (
    id bigint, generation bigint, topic text, payload jsonb, idempotency_key text,
    attempts integer, created_at timestamptz, trace_parent text
)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH c AS (
        SELECT o.id FROM core.outbox AS o
        WHERE o.generation = p_generation AND o.status = 'pending' AND o.available_at <= now()
        ORDER BY o.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE core.outbox AS o
    SET status = 'in_flight', attempts = o.attempts + 1, claimed_at = now(),
        claimed_by = p_worker_id
    FROM c
    WHERE o.id = c.id
    RETURNING o.id, o.generation, o.topic, o.payload, o.idempotency_key, o.attempts,
              o.created_at, o.trace_parent;
END
$$;

CREATE FUNCTION core.outbox_start_v1(
    p_generation bigint, p_worker_id uuid, p_handlers text[], p_keys text[], p_ids bigint[]
)
RETURNS TABLE (held bigint[], handler_name text, outbox_id bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH done AS (
        UPDATE core.outbox AS o
        SET status = 'done', finished_at = now(), claimed_by = NULL, last_error = NULL
        WHERE o.id = ANY(p_ids) AND o.generation = p_generation
          AND o.status = 'in_flight' AND o.claimed_by = p_worker_id
        RETURNING o.id
    ), fresh AS (
        INSERT INTO core.event_handled AS h (handler_name, idempotency_key, outbox_id, generation)
        SELECT u.h, u.k, u.i, p_generation
        FROM unnest(p_handlers, p_keys, p_ids) AS u (h, k, i)
        WHERE u.i IN (SELECT d.id FROM done AS d)
        ORDER BY u.h, u.k, u.i
        ON CONFLICT DO NOTHING
        RETURNING h.handler_name, h.outbox_id
    )
    SELECT coalesce(array_agg(d.id), '{}'::bigint[]), NULL::text, NULL::bigint FROM done AS d
    UNION ALL
    SELECT NULL::bigint[], f.handler_name, f.outbox_id FROM fresh AS f;
END
$$;
