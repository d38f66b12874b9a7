-- The core schema: deployment generations, the outbox, the idempotency ledger and the
-- worker registry.  Every object is schema-qualified: nothing relies on search_path.
CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.deployments (
    generation  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version     text NOT NULL CHECK (version <> ''),
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE core.outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    generation       bigint NOT NULL REFERENCES core.deployments (generation),
    topic            text NOT NULL,
    payload          jsonb NOT NULL,
    idempotency_key  text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'done', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    available_at     timestamptz NOT NULL DEFAULT now(),
    claimed_at       timestamptz,
    claimed_by       uuid,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- The claim path: pending rows, oldest first.  Two partial indexes on purpose: with
-- statistics taken while a backlog was pending, the planner walks the primary key for the
-- dominant generation and filters out every finished row (20-60 ms per claim at 30k done
-- rows); the (id) index keeps that ordered walk inside the pending rows, and the
-- (generation, id) one serves a small generation overlapping a large one during cutover.
CREATE INDEX outbox_pending_v1 ON core.outbox (generation, id) WHERE status = 'pending';
CREATE INDEX outbox_pending_id_v1 ON core.outbox (id) WHERE status = 'pending';
-- The reaper path: in-flight rows of one generation by claimer.
CREATE INDEX outbox_in_flight_v1 ON core.outbox (generation, claimed_by) WHERE status = 'in_flight';

CREATE TABLE core.event_handled (
    handler_name     text NOT NULL,
    idempotency_key  text NOT NULL,
    outbox_id        bigint,
    generation       bigint NOT NULL,
    handled_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (handler_name, idempotency_key)
);

CREATE TABLE core.workers (
    id          uuid PRIMARY KEY,
    generation  bigint NOT NULL REFERENCES core.deployments (generation),
    state       text NOT NULL CHECK (state IN ('running', 'reconnecting', 'exited')),
    host        text NOT NULL,
    pid         integer NOT NULL,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    reconnects  integer NOT NULL DEFAULT 0,     -- transitions into 'reconnecting'
    exited_at   timestamptz
);
CREATE INDEX workers_generation_v1 ON core.workers (generation, state);
