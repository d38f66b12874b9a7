-- spectral: no-transaction
-- Dead World Agent turns per generation for /metrics (ADR 0029), as 0010 does for the outbox.
CREATE INDEX CONCURRENTLY IF NOT EXISTS turns_dead_v1 ON agent.turns (generation, created_at)
WHERE status = 'dead'
