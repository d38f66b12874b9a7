-- spectral: no-transaction
-- The rows a worker holds, by id (issue 20.1, ADR 0034): core.outbox_start_v1 and
-- complete_batch find a batch's rows with `generation = g AND status = 'in_flight' AND
-- claimed_by = w AND id = ANY(ids)`.  On outbox_in_flight_v1 (generation, claimed_by) that
-- walked every entry ever left under the worker's key (dead ones included, until a vacuum);
-- with the id in the key the walk goes straight to the batch's ids, so the plan is cheap
-- whichever of this index and the primary key the statistics pick.  The reaper and the
-- orphan release use the same prefix; outbox_in_flight_v1 goes in migration 0015.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_in_flight_v2
    ON core.outbox (generation, claimed_by, id) WHERE status = 'in_flight';
