-- core.outbox_claim_v2 (ADR 0047): core.outbox_claim_v1 (migration 0013) with its UPDATE
-- finding the rows the claim has just locked by their ctid, not by a primary-key probe per
-- row.  Same arguments, same rows, same result columns, same asynchronous commit.
--
-- Why the ctid holds: the CTE locks each row it returns (FOR UPDATE), so until this
-- statement's transaction ends no other transaction can update, delete or move the row
-- version it names (VACUUM does not move tuples; VACUUM FULL and CLUSTER need a lock that
-- conflicts with this statement's).  The generation, status and availability predicates
-- are the CTE's, written plainly as in v1.  `SET enable_seqscan = off` keeps the join a
-- TID scan whatever the statistics say, as it keeps the CTE on the pending indexes.
-- core.outbox_claim_v1 stays for code of an older generation still draining on it and goes
-- in a later release.
CREATE FUNCTION core.outbox_claim_v2(p_generation bigint, p_worker_id uuid, p_limit integer)
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
        SELECT o.ctid AS row_version FROM core.outbox AS o
        WHERE o.generation = p_generation AND o.status = 'pending' AND o.available_at <= now()
        ORDER BY o.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE core.outbox AS o
    SET status = 'in_flight', attempts = o.attempts + 1, claimed_at = now(),
        claimed_by = p_worker_id
    FROM c
    WHERE o.ctid = c.row_version
    RETURNING o.id, o.generation, o.topic, o.payload, o.idempotency_key, o.attempts,
              o.created_at, o.trace_parent;
END
$$;
