-- name: insert_module_blob
-- description: content-addressed and idempotent: the same bytes always land on the same row
INSERT INTO core.module_blobs (content_hash, bytes, size)
VALUES (%(content_hash)s, %(bytes)s, %(size)s)
ON CONFLICT (content_hash) DO NOTHING
RETURNING created_at

-- name: select_module_blob
SELECT bytes FROM core.module_blobs WHERE content_hash = %(content_hash)s

-- name: insert_module_pin
-- description: returns the content hash the key is pinned to (new or pre-existing)
WITH ins AS (
    INSERT INTO core.module_pins (org, domain, action, world_model_version, content_hash)
    VALUES (%(org)s, %(domain)s, %(action)s, %(world_model_version)s, %(content_hash)s)
    ON CONFLICT (org, domain, action, world_model_version) DO NOTHING
    RETURNING content_hash, true AS created
)
SELECT content_hash, created FROM ins
UNION ALL
SELECT content_hash, false FROM core.module_pins
WHERE org = %(org)s AND domain = %(domain)s AND action = %(action)s
  AND world_model_version = %(world_model_version)s
  AND NOT EXISTS (SELECT 1 FROM ins)

-- name: select_pin
-- description: the decide path on a cache miss: the pinned address only (the bytes are
-- read once the approval is checked, and only when not compiled yet)
SELECT content_hash
FROM core.module_pins
WHERE org = %(org)s AND domain = %(domain)s AND action = %(action)s
  AND world_model_version = %(world_model_version)s

-- name: select_pin_with_blob
-- description: the decide path on a cache miss: pin and bytes in one round trip
SELECT p.content_hash, b.bytes
FROM core.module_pins AS p
JOIN core.module_blobs AS b ON b.content_hash = p.content_hash
WHERE p.org = %(org)s AND p.domain = %(domain)s AND p.action = %(action)s
  AND p.world_model_version = %(world_model_version)s

-- name: insert_module_approval
INSERT INTO core.module_approvals
    (key_id, content_hash, org, domain, action, world_model_version, expires_at, signature)
VALUES (%(key_id)s, %(content_hash)s, %(org)s, %(domain)s, %(action)s,
        %(world_model_version)s, %(expires_at)s, %(signature)s)
ON CONFLICT (key_id, content_hash, org, domain, action, world_model_version, expires_at)
DO NOTHING
RETURNING id

-- name: select_module_approval_id
SELECT id FROM core.module_approvals
WHERE key_id = %(key_id)s AND content_hash = %(content_hash)s AND org = %(org)s
  AND domain = %(domain)s AND action = %(action)s
  AND world_model_version = %(world_model_version)s AND expires_at = %(expires_at)s

-- name: select_approvals_for
-- description: every approval row of one (key, content) pair, revoked and expired included
SELECT id, key_id, content_hash, org, domain, action, world_model_version, expires_at,
       signature, revoked_at IS NOT NULL AS revoked
FROM core.module_approvals
WHERE org = %(org)s AND domain = %(domain)s AND action = %(action)s
  AND world_model_version = %(world_model_version)s AND content_hash = %(content_hash)s
ORDER BY expires_at DESC
LIMIT 32

-- name: revoke_module_approval
UPDATE core.module_approvals
SET revoked_at = now(), revoked_reason = %(reason)s
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id

-- name: module_approval_exists
SELECT revoked_at IS NOT NULL FROM core.module_approvals WHERE id = %(id)s

-- name: list_modules
-- description: pins with their size and approval counts, optionally of one org
SELECT p.org, p.domain, p.action, p.world_model_version, p.content_hash, b.size, p.created_at,
       count(a.id) FILTER (WHERE a.revoked_at IS NULL
                             AND a.expires_at > extract(epoch FROM now())) AS live_approvals,
       coalesce(array_agg(a.id ORDER BY a.id) FILTER (WHERE a.id IS NOT NULL), '{}')
           AS approval_ids
FROM core.module_pins AS p
JOIN core.module_blobs AS b ON b.content_hash = p.content_hash
LEFT JOIN core.module_approvals AS a
    ON a.org = p.org AND a.domain = p.domain AND a.action = p.action
   AND a.world_model_version = p.world_model_version AND a.content_hash = p.content_hash
WHERE %(org)s::text IS NULL OR p.org = %(org)s::text
GROUP BY p.org, p.domain, p.action, p.world_model_version, p.content_hash, b.size, p.created_at
ORDER BY p.org, p.domain, p.action, p.world_model_version

-- name: list_module_approvals
SELECT id, key_id, content_hash, org, domain, action, world_model_version, expires_at,
       created_at, revoked_at
FROM core.module_approvals
WHERE %(org)s::text IS NULL OR org = %(org)s::text
ORDER BY id
