-- The World Agent: its own schema `agent`, kept out of `core`'s way.
--
-- 1. The LangGraph checkpointer's tables.  langgraph-checkpoint-postgres creates them with
--    unqualified names from `AsyncPostgresSaver.setup()`; we replicate that DDL here (its
--    MIGRATIONS v0..v9 of the 3.x series) so the migration runner owns the schema, and the
--    checkpointer pool finds the tables through `options=-c search_path=agent`.  The ledger
--    `agent.checkpoint_migrations` is filled in so a stray `setup()` is a no-op; a test fails
--    when an upgraded package brings a migration we have not replicated yet.
-- 2. The turn queue (`agent.turns`): one row per observed event, handed off by the outbox
--    handler in its batch transaction and run outside it by the agent runner.
-- 3. The platform state the agent's tools read and write: world facts per (org, domain),
--    and drafted decision-module versions awaiting operator approval (never approved here).
CREATE SCHEMA IF NOT EXISTS agent;

CREATE TABLE agent.checkpoint_migrations (
    v integer PRIMARY KEY
);

CREATE TABLE agent.checkpoints (
    thread_id             text NOT NULL,
    checkpoint_ns         text NOT NULL DEFAULT '',
    checkpoint_id         text NOT NULL,
    parent_checkpoint_id  text,
    type                  text,
    checkpoint            jsonb NOT NULL,
    metadata              jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);

CREATE TABLE agent.checkpoint_blobs (
    thread_id      text NOT NULL,
    checkpoint_ns  text NOT NULL DEFAULT '',
    channel        text NOT NULL,
    version        text NOT NULL,
    type           text NOT NULL,
    blob           bytea,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);

CREATE TABLE agent.checkpoint_writes (
    thread_id      text NOT NULL,
    checkpoint_ns  text NOT NULL DEFAULT '',
    checkpoint_id  text NOT NULL,
    task_id        text NOT NULL,
    idx            integer NOT NULL,
    channel        text NOT NULL,
    type           text,
    blob           bytea NOT NULL,
    task_path      text NOT NULL DEFAULT '',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);

CREATE INDEX checkpoints_thread_id_idx ON agent.checkpoints (thread_id);
CREATE INDEX checkpoint_blobs_thread_id_idx ON agent.checkpoint_blobs (thread_id);
CREATE INDEX checkpoint_writes_thread_id_idx ON agent.checkpoint_writes (thread_id);

INSERT INTO agent.checkpoint_migrations (v) SELECT generate_series(0, 9);

-- One turn per observed event.  thread_id = '<org>:<domain>:<idempotency key>' is also the
-- checkpointer's thread, so a re-run of the turn resumes its own checkpoint.
CREATE TABLE agent.turns (
    thread_id        text PRIMARY KEY,
    generation       bigint NOT NULL REFERENCES core.deployments (generation),
    org              text NOT NULL,
    domain           text NOT NULL,
    idempotency_key  text NOT NULL,
    outbox_id        bigint,
    observation      jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'done', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    available_at     timestamptz NOT NULL DEFAULT now(),
    claimed_by       uuid,
    claimed_at       timestamptz,
    last_error       text,
    result           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX turns_pending_v1 ON agent.turns (generation, created_at) WHERE status = 'pending';
CREATE INDEX turns_running_v1 ON agent.turns (generation, claimed_by) WHERE status = 'running';

CREATE TABLE agent.world_facts (
    org         text NOT NULL,
    domain      text NOT NULL,
    key         text NOT NULL CHECK (key <> ''),
    value       jsonb NOT NULL,
    thread_id   text,                       -- the turn that wrote it last
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org, domain, key)
);

-- Drafted decision-module versions.  The agent may only propose: approval is an
-- operator's signature in the module store (core.module_approvals); nothing in the agent
-- writes there.
CREATE TABLE agent.module_drafts (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org                  text NOT NULL,
    domain               text NOT NULL,
    action               text NOT NULL,
    world_model_version  text NOT NULL,
    source               text NOT NULL,
    note                 text,
    status               text NOT NULL DEFAULT 'awaiting_approval'
                         CHECK (status IN ('awaiting_approval', 'rejected', 'promoted')),
    thread_id            text NOT NULL,
    tool_call_id         text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (thread_id, tool_call_id)
);
CREATE INDEX module_drafts_org_v1 ON agent.module_drafts (org, domain, status);
