-- The operator console's statements (issue 18, ADR 0038): sessions, audit and the reads
-- the queue gauges of metrics.sql do not cover.  Each is bounded: a primary-key or
-- partial-index lookup, or a small registry table with a LIMIT.

-- name: insert_operator_session
-- description: a new browser session of an operator key; only the id's sha256 is stored
INSERT INTO core.operator_sessions (id_sha256, key_id, expires_at)
VALUES (%(id_sha256)s, %(key_id)s, now() + make_interval(secs => %(ttl_s)s))
RETURNING expires_at

-- name: select_operator_session
-- description: the session's operator key (live, operator, not revoked) with its tenant's
-- limits; one primary-key lookup joined to two primary keys
SELECT k.id, k.org, k.operator, t.rate, t.burst, t.concurrency, k.label, s.expires_at
FROM core.operator_sessions AS s
JOIN core.api_keys AS k ON k.id = s.key_id
JOIN core.tenants AS t ON t.org = k.org
WHERE s.id_sha256 = %(id_sha256)s AND s.expires_at > now()
  AND k.revoked_at IS NULL AND k.operator

-- name: delete_operator_session
DELETE FROM core.operator_sessions WHERE id_sha256 = %(id_sha256)s

-- name: prune_operator_sessions
-- description: expired sessions, at most 1000 per call (run at each login)
DELETE FROM core.operator_sessions
WHERE id_sha256 IN (SELECT id_sha256 FROM core.operator_sessions
                    WHERE expires_at < now() ORDER BY expires_at LIMIT 1000)

-- name: insert_operator_audit
-- description: the audit row of an operator action, in the action's transaction; the
-- key's label is copied (the row stays readable if the key is relabelled)
INSERT INTO core.operator_audit (key_id, key_label, action, target, detail)
SELECT %(key_id)s, (SELECT label FROM core.api_keys WHERE id = %(key_id)s),
       %(action)s, %(target)s, %(detail)s
RETURNING id, at

-- name: list_operator_audit
-- description: newest first, bounded
SELECT id, at, key_id, key_label, action, target, detail
FROM core.operator_audit
ORDER BY id DESC
LIMIT %(limit)s

-- name: operator_generations
-- description: the newest allocated generations (the deployments table: one row per deploy)
SELECT generation, version, created_at
FROM core.deployments
ORDER BY generation DESC
LIMIT %(limit)s

-- name: operator_processes
-- description: workers and API processes seen within the retention (small registry
-- tables, pruned by the reapers), optionally of one generation; `lost` as ADR 0027 derives
-- it (not exited, heartbeat older than the stale bound)
SELECT * FROM (
    SELECT 'worker' AS role, id::text, generation, state, host, pid, version,
           extract(epoch FROM now() - last_seen)::float8 AS age_s, reconnects,
           state <> 'exited'
               AND last_seen < now() - make_interval(secs => %(stale_after_s)s) AS lost
    FROM core.workers
    WHERE last_seen > now() - make_interval(secs => %(retention_s)s)
      AND (%(generation)s::bigint IS NULL OR generation = %(generation)s::bigint)
    UNION ALL
    SELECT 'api', id::text, generation, state, host, pid, version,
           extract(epoch FROM now() - last_seen)::float8, reconnects,
           state <> 'exited'
               AND last_seen < now() - make_interval(secs => %(stale_after_s)s)
    FROM core.api_processes
    WHERE last_seen > now() - make_interval(secs => %(retention_s)s)
      AND (%(generation)s::bigint IS NULL OR generation = %(generation)s::bigint)
) AS p
ORDER BY generation DESC, role DESC, id
LIMIT %(limit)s

-- name: operator_dead_rows
-- description: dead rows of one generation, oldest first, through the dead-rows partial
-- index (outbox_dead_v1); the payload cut to a preview in the database
SELECT id, topic, attempts, last_error, left(payload::text, %(preview)s), created_at
FROM core.outbox
WHERE generation = %(generation)s AND status = 'dead'
ORDER BY id
LIMIT %(limit)s

-- name: operator_dead_turns
-- description: dead World Agent turns of one generation, newest first, through the
-- dead-turns partial index (turns_dead_v1)
SELECT thread_id, org, domain, attempts, last_error, created_at, finished_at
FROM agent.turns
WHERE generation = %(generation)s AND status = 'dead'
ORDER BY created_at DESC
LIMIT %(limit)s

-- name: operator_tenants
-- description: tenants by name, bounded (one more than shown: the caller tells "truncated")
SELECT org, rate, burst, concurrency
FROM core.tenants
ORDER BY org
LIMIT %(limit)s

-- name: operator_api_keys
-- description: the keys of the listed tenants (api_keys_org_v1), never their hashes
SELECT id, org, operator, label, created_at, revoked_at
FROM core.api_keys
WHERE org = ANY(%(orgs)s::text[])
ORDER BY org, created_at, id
LIMIT %(limit)s

-- name: operator_pins
-- description: pins by key, bounded; the blob's size only (its bytes are not read)
SELECT p.org, p.domain, p.action, p.world_model_version, p.content_hash, b.size, p.created_at
FROM core.module_pins AS p
JOIN core.module_blobs AS b ON b.content_hash = p.content_hash
ORDER BY p.org, p.domain, p.action, p.world_model_version
LIMIT %(limit)s

-- name: operator_pin_approvals
-- description: the newest approvals of each listed pin's content (module_approvals_key_v1),
-- at most %(per_pin)s per pin
SELECT a.id, a.key_id, k.org, k.domain, k.action, k.wmv, k.hash, a.expires_at, a.created_at,
       a.revoked_at
FROM unnest(%(orgs)s::text[], %(domains)s::text[], %(actions)s::text[], %(wmvs)s::text[],
            %(hashes)s::text[]) AS k (org, domain, action, wmv, hash)
CROSS JOIN LATERAL (
    SELECT id, key_id, expires_at, created_at, revoked_at
    FROM core.module_approvals AS m
    WHERE m.org = k.org AND m.domain = k.domain AND m.action = k.action
      AND m.world_model_version = k.wmv AND m.content_hash = k.hash
    ORDER BY m.id DESC
    LIMIT %(per_pin)s
) AS a
ORDER BY a.id
