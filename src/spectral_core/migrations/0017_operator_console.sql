-- The operator console (issue 18, ADR 0038): browser sessions of operator keys and the
-- audit trail of the console's actions.
--
-- A session row holds the sha256 of the random session id the browser keeps in an
-- HttpOnly cookie (never the id itself), so any API process of the fleet accepts it and a
-- leaked table does not leak usable sessions.  It belongs to the operator API key that
-- opened it: revoking that key ends its sessions at once (the lookup joins the key).
CREATE TABLE core.operator_sessions (
    id_sha256   bytea PRIMARY KEY,
    key_id      text NOT NULL REFERENCES core.api_keys (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX operator_sessions_expires_v1 ON core.operator_sessions (expires_at);

-- One row per operator action (re-drive, revoke ...), written in the action's own
-- transaction: an action without its row never commits.  Append-only.
CREATE TABLE core.operator_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    key_id      text NOT NULL,
    key_label   text,
    action      text NOT NULL,
    target      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
