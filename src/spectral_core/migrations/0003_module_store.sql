-- The content-addressed decision-module store: blobs by sha256, immutable pins from a
-- module key to one content hash, and operator approvals (Ed25519 signatures made offline).
-- Immutability is enforced here too, not only in the library: pins and blobs can never be
-- updated or deleted; an approval can only be revoked (revoked_at set once).

CREATE TABLE core.module_blobs (
    content_hash  text PRIMARY KEY CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    bytes         bytea NOT NULL,
    size          integer NOT NULL CHECK (size >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE core.module_pins (
    org                  text NOT NULL,
    domain               text NOT NULL,
    action               text NOT NULL,
    world_model_version  text NOT NULL,
    content_hash         text NOT NULL REFERENCES core.module_blobs (content_hash),
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, domain, action, world_model_version)
);

CREATE TABLE core.module_approvals (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id               text NOT NULL,
    content_hash         text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    org                  text NOT NULL,
    domain               text NOT NULL,
    action               text NOT NULL,
    world_model_version  text NOT NULL,
    expires_at           bigint NOT NULL,
    signature            text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    revoked_at           timestamptz,
    revoked_reason       text,
    UNIQUE (key_id, content_hash, org, domain, action, world_model_version, expires_at)
);
-- The decide path: the approvals of one (key, content) pair.
CREATE INDEX module_approvals_key_v1
    ON core.module_approvals (org, domain, action, world_model_version, content_hash);

CREATE FUNCTION core.forbid_change_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of core.% are immutable', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER module_blobs_immutable_v1
    BEFORE UPDATE OR DELETE ON core.module_blobs
    FOR EACH ROW EXECUTE FUNCTION core.forbid_change_v1();
CREATE TRIGGER module_blobs_no_truncate_v1
    BEFORE TRUNCATE ON core.module_blobs
    FOR EACH STATEMENT EXECUTE FUNCTION core.forbid_change_v1();
CREATE TRIGGER module_pins_immutable_v1
    BEFORE UPDATE OR DELETE ON core.module_pins
    FOR EACH ROW EXECUTE FUNCTION core.forbid_change_v1();
CREATE TRIGGER module_pins_no_truncate_v1
    BEFORE TRUNCATE ON core.module_pins
    FOR EACH STATEMENT EXECUTE FUNCTION core.forbid_change_v1();

-- Approvals: the only permitted change is revoking a live approval (revoked_at NULL -> set).
CREATE FUNCTION core.approval_revoke_only_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
       AND (NEW.id, NEW.key_id, NEW.content_hash, NEW.org, NEW.domain, NEW.action,
            NEW.world_model_version, NEW.expires_at, NEW.signature, NEW.created_at)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.key_id, OLD.content_hash, OLD.org, OLD.domain, OLD.action,
            OLD.world_model_version, OLD.expires_at, OLD.signature, OLD.created_at)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'approvals can only be revoked, never edited or deleted'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER module_approvals_revoke_only_v1
    BEFORE UPDATE OR DELETE ON core.module_approvals
    FOR EACH ROW EXECUTE FUNCTION core.approval_revoke_only_v1();
CREATE TRIGGER module_approvals_no_truncate_v1
    BEFORE TRUNCATE ON core.module_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION core.forbid_change_v1();
