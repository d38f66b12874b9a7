-- The server sessions of each worker (issue 16.1, ADR 0027).
--
-- A worker records the backend (pid and start time) of every direct connection it uses.
-- When a worker is declared lost (its heartbeat is older than the stale bound), a peer's
-- reaper terminates those backends: the lost worker's open transactions roll back and its
-- row locks go, so its claims can be re-pended.  The start time guards against a reused
-- pid: only a backend whose pid and start time both match is terminated.  Rows go with
-- their worker (clean exit, retention prune).  A new table: backward compatible.
CREATE TABLE core.worker_sessions (
    worker_id      uuid NOT NULL,
    pid            integer NOT NULL,
    backend_start  timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_id, pid, backend_start)
);
