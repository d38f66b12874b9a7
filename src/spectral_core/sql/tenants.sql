-- name: insert_tenant
INSERT INTO core.tenants (org, rate, burst, concurrency)
VALUES (%(org)s, %(rate)s, %(burst)s, %(concurrency)s)
ON CONFLICT (org) DO NOTHING
RETURNING org

-- name: select_tenants
SELECT t.org, t.rate, t.burst, t.concurrency, t.created_at,
       count(k.id) FILTER (WHERE k.revoked_at IS NULL) AS live_keys
FROM core.tenants AS t
LEFT JOIN core.api_keys AS k ON k.org = t.org
GROUP BY t.org
ORDER BY t.org

-- name: tenant_exists
SELECT EXISTS (SELECT 1 FROM core.tenants WHERE org = %(org)s)

-- name: update_tenant_limits
UPDATE core.tenants
SET rate = %(rate)s, burst = %(burst)s, concurrency = %(concurrency)s
WHERE org = %(org)s
RETURNING org

-- name: insert_api_key
INSERT INTO core.api_keys (id, org, token_sha256, operator, label)
VALUES (%(id)s, %(org)s, %(token_sha256)s, %(operator)s, %(label)s)
RETURNING created_at

-- name: select_api_keys
SELECT id, org, operator, label, created_at, revoked_at
FROM core.api_keys
WHERE %(org)s::text IS NULL OR org = %(org)s::text
ORDER BY org, created_at, id

-- name: revoke_api_key
UPDATE core.api_keys SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING org

-- name: api_key_exists
SELECT EXISTS (SELECT 1 FROM core.api_keys WHERE id = %(id)s)

-- name: authenticate_api_key
-- description: the auth path: one indexed lookup by token hash, with the tenant's limits
SELECT k.id, k.org, k.operator, t.rate, t.burst, t.concurrency
FROM core.api_keys AS k
JOIN core.tenants AS t ON t.org = k.org
WHERE k.token_sha256 = %(token_sha256)s AND k.revoked_at IS NULL
