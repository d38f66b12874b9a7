-- The application_name a worker gives each server session it records (ADR 0043).
--
-- The reaper terminates a recorded backend of a lost worker only while its pid, its start
-- time and this name (unique per worker: 'spectral-worker <worker id>') all match the live
-- backend in pg_stat_activity.  pid and start time alone name a server process, not the
-- worker's session: a pooler that passed a real server pid through would make a shared
-- backend look like the worker's own, and terminating it would end other clients' work.
-- A nullable new column: backward compatible.  Rows recorded before it (NULL) never match,
-- so their backends are not terminated (the reaper still re-pends what is not locked).
ALTER TABLE core.worker_sessions ADD COLUMN application_name text;
