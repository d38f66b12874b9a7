-- spectral: no-transaction
-- Dead rows per generation for /metrics (ADR 0029) through an index holding only the dead
-- rows, instead of a scan of the whole outbox.  Rows become dead rarely, so the index is
-- small and costs nothing on the claim / settle path (a partial index whose predicate a
-- row does not match is not written).
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_dead_v1 ON core.outbox (generation, id)
WHERE status = 'dead'
