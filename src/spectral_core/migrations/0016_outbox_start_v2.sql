-- core.outbox_start_v2 (issue 20.1, ADR 0034): the start of a batch's handler transaction
-- with the routing done in SQL.  The caller passes the batch's ids and the registry's
-- (topic, handler name) pairs, not one (handler, key, id) triple per handler call: the
-- three 100-element arrays of core.outbox_start_v1 were most of the client's cost of a
-- batch.  Same outcome: the rows still held (and of a routed topic) become done, the
-- ledger rows of their (handler, row) pairs are written in (handler, key, id) order, and
-- the held ids come back once, then one row per handler call to make.  core.outbox_start_v1
-- (migration 0013) is no longer called and goes in a later release.
CREATE FUNCTION core.outbox_start_v2(
    p_generation bigint, p_worker_id uuid, p_ids bigint[], p_topics text[], p_handlers text[]
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
          AND o.topic = ANY(p_topics)
        RETURNING o.id, o.topic, o.idempotency_key
    ), fresh AS (
        INSERT INTO core.event_handled AS h (handler_name, idempotency_key, outbox_id, generation)
        SELECT r.h, d.idempotency_key, d.id, p_generation
        FROM done AS d JOIN unnest(p_topics, p_handlers) AS r (t, h) ON r.t = d.topic
        ORDER BY r.h, d.idempotency_key, d.id
        ON CONFLICT DO NOTHING
        RETURNING h.handler_name, h.outbox_id
    )
    SELECT coalesce(array_agg(d.id), '{}'::bigint[]), NULL::text, NULL::bigint FROM done AS d
    UNION ALL
    SELECT NULL::bigint[], f.handler_name, f.outbox_id FROM fresh AS f;
END
$$;
