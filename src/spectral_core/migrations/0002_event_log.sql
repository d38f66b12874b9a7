-- A generic, append-only log written by the built-in ``workers.platform.record`` handler:
-- what the demo and the fault tests count to prove exactly-once effects.
CREATE TABLE core.event_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id        bigint NOT NULL,
    generation       bigint NOT NULL,            -- the outbox row's generation
    handled_by       bigint NOT NULL,            -- the generation of the worker that ran it
    topic            text NOT NULL,
    idempotency_key  text NOT NULL,
    payload          jsonb NOT NULL,
    handled_at       timestamptz NOT NULL DEFAULT now()
);
