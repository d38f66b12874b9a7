-- Observability (issue 17, ADR 0029): three nullable columns, no default, no rewrite.
--
-- core.outbox.trace_parent: the W3C `traceparent` of the span that was current when the
-- row was published (NULL when none was, or when no tracing SDK is configured); the
-- consumer runs each handler in a child span of it.  agent.turns.trace_parent: the same for
-- a World Agent turn, written by the observe handler inside its span, so a turn's spans
-- join the trace of the request that published the observation.
-- core.workers.metrics: the worker's process counters (handled / failed / retried / dead
-- per handler, handler durations, claim batch sizes), written with each heartbeat, so the
-- API's /metrics and `spectral deploy status` see every worker without scraping it.
-- Backward compatible: the prior generation's code neither writes nor reads them.
ALTER TABLE core.outbox ADD COLUMN IF NOT EXISTS trace_parent text;
ALTER TABLE agent.turns ADD COLUMN IF NOT EXISTS trace_parent text;
ALTER TABLE core.workers ADD COLUMN IF NOT EXISTS metrics jsonb;
