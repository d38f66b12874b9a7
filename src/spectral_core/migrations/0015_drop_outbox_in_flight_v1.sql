-- spectral: no-transaction
-- outbox_in_flight_v2 (migration 0014) covers every lookup of outbox_in_flight_v1 (its
-- key starts with the same columns), and while both exist the planner, whose statistics
-- rarely see rows in flight, prefers the narrower v1 for a batch's settlement: a walk of
-- every entry the worker ever left under its key.  Not unique, dropped concurrently: code
-- of an older generation plans its reaper and orphan release on v2 (issue 20.1, ADR 0034).
DROP INDEX CONCURRENTLY IF EXISTS core.outbox_in_flight_v1;
