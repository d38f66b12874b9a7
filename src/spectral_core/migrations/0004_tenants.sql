-- Tenants (organisations) and their API keys.  Keys are stored as sha256 of a high-entropy
-- random token, never the token itself.  Per-tenant limit overrides are nullable: NULL
-- means the process default (SPECTRAL_API_RATE / _BURST / _CONCURRENCY).

CREATE TABLE core.tenants (
    org          text PRIMARY KEY CHECK (org ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    rate         double precision CHECK (rate > 0),
    burst        integer CHECK (burst >= 1),
    concurrency  integer CHECK (concurrency >= 1),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE core.api_keys (
    id            text PRIMARY KEY,
    org           text NOT NULL REFERENCES core.tenants (org),
    token_sha256  bytea NOT NULL UNIQUE,
    operator      boolean NOT NULL DEFAULT false,
    label         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX api_keys_org_v1 ON core.api_keys (org);
