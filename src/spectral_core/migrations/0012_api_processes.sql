-- The API processes of the fleet (issue 22.2, ADR 0032).
--
-- Every spectral-api process registers here like a worker does in core.workers, with the
-- same columns, states, heartbeat interval, stale bound (``lost`` is derived) and
-- retention.  A sibling table rather than a role column on core.workers: the previous
-- generation's code counts every core.workers row as a worker (deploy status, /health's
-- workers:live, the reapers' judgement of claimers), so API rows there would be
-- miscounted during a cutover.  A new table: backward compatible.
CREATE TABLE core.api_processes (
    id          uuid PRIMARY KEY,
    generation  bigint NOT NULL REFERENCES core.deployments (generation),
    state       text NOT NULL CHECK (state IN ('running', 'reconnecting', 'exited')),
    host        text NOT NULL,
    pid         integer NOT NULL,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    reconnects  integer NOT NULL DEFAULT 0,
    exited_at   timestamptz
);
CREATE INDEX api_processes_last_seen ON core.api_processes (last_seen);
