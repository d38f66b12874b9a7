"""The Prometheus families of the queue gauges and of the workers' snapshots.

:class:`QueueCollector` is a ``prometheus_client`` custom collector: at scrape time it turns
the last :class:`~spectral_core.metrics.queue.QueueSnapshot` into metric families (no
hand-written exposition; ``prometheus_client`` renders them).  Names and labels follow the
Prometheus conventions: units in the names, ``_total`` counters, and only bounded label
values (generation numbers, statuses, worker ids, registered handler names), never a
tenant-supplied string.  Each is documented in ``docs/reference/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .queue import QueueStats, WorkerRow
from .worker import SNAPSHOT_VERSION

__all__ = ["QueueCollector", "cumulative_buckets"]

_OUTBOX_STATUSES = ("pending", "in_flight", "dead")
_TURN_STATUSES = ("pending", "running", "dead")
_WORKER_STATES = ("running", "reconnecting", "lost")


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Non-cumulative counts (the last one +Inf) as Prometheus's cumulative buckets."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip([*bounds, float("inf")], counts, strict=False):
        total += int(n)
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(total)))
    return out


class QueueCollector(Collector):
    """Queue gauges and the workers' counters from the last :class:`QueueStats` read."""

    def __init__(self, stats: QueueStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        snap = self.stats.snapshot
        up = GaugeMetricFamily(
            "spectral_queue_stats_up",
            "1 when the last read of the queue gauges from PostgreSQL succeeded",
            value=0 if snap is None else 1,
        )
        yield up
        if snap is None:
            return
        yield GaugeMetricFamily(
            "spectral_queue_stats_read_seconds",
            "Duration of the last read of the queue gauges",
            value=snap.read_seconds,
        )
        yield GaugeMetricFamily(
            "spectral_queue_stats_timestamp_seconds",
            "When the queue gauges were read (they are cached for SPECTRAL_METRICS_CACHE_S)",
            value=snap.read_at,
        )
        rows = GaugeMetricFamily(
            "spectral_outbox_rows",
            "Outbox rows per generation and status (pending, in_flight, dead)",
            labels=["generation", "status"],
        )
        for (g, status), n in sorted(snap.outbox.items()):
            rows.add_metric([str(g), status], n)
        yield rows
        oldest = GaugeMetricFamily(
            "spectral_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row per generation",
            labels=["generation"],
        )
        for g, age in sorted(snap.outbox_oldest_pending_s.items()):
            oldest.add_metric([str(g)], age)
        yield oldest
        estimate = GaugeMetricFamily(
            "spectral_table_rows_estimate",
            "The planner's row estimate of a table (pg_class.reltuples, updated by "
            "(auto)analyze): core.outbox, core.event_handled, agent.turns",
            labels=["table"],
        )
        for name, rows_estimate in sorted(snap.estimates.items()):
            estimate.add_metric([name], rows_estimate)
        yield estimate
        turns = GaugeMetricFamily(
            "spectral_agent_turns",
            "World Agent turns per generation and status (pending, running, dead)",
            labels=["generation", "status"],
        )
        for (g, status), n in sorted(snap.turns.items()):
            turns.add_metric([str(g), status], n)
        yield turns
        turn_age = GaugeMetricFamily(
            "spectral_agent_oldest_pending_turn_age_seconds",
            "Age of the oldest pending World Agent turn per generation",
            labels=["generation"],
        )
        for g, age in sorted(snap.turns_oldest_pending_s.items()):
            turn_age.add_metric([str(g)], age)
        yield turn_age
        yield from self._workers(snap.workers)
        api = GaugeMetricFamily(
            "spectral_api_processes",
            "API processes that have not exited, per generation and state (running, "
            "reconnecting, lost: heartbeat older than SPECTRAL_WORKER_STALE_AFTER_S; ADR 0032)",
            labels=["generation", "state"],
        )
        for g in sorted({g for g, _ in snap.api_processes}):
            for state in _WORKER_STATES:
                api.add_metric([str(g), state], snap.api_processes.get((g, state), 0))
        yield api
        stranded = GaugeMetricFamily(
            "spectral_generation_stranded",
            "1 when a generation has pending or in-flight work and no live worker",
            labels=["generation"],
        )
        for g in sorted(snap.generations):
            stranded.add_metric([str(g)], 1 if snap.stranded(g) else 0)
        yield stranded

    def _workers(self, workers: list[WorkerRow]) -> Iterator[Metric]:
        by_state: dict[tuple[int, str], int] = {}
        oldest: dict[int, float] = {}
        for w in workers:
            by_state[(w.generation, w.state)] = by_state.get((w.generation, w.state), 0) + 1
            oldest[w.generation] = max(oldest.get(w.generation, 0.0), w.heartbeat_age_s)
        count = GaugeMetricFamily(
            "spectral_workers",
            "Workers that have not exited, per generation and state (running, reconnecting, "
            "lost: heartbeat older than SPECTRAL_WORKER_STALE_AFTER_S)",
            labels=["generation", "state"],
        )
        for g in sorted(oldest):
            for state in _WORKER_STATES:
                count.add_metric([str(g), state], by_state.get((g, state), 0))
        yield count
        age = GaugeMetricFamily(
            "spectral_worker_oldest_heartbeat_age_seconds",
            "Age of the oldest heartbeat among a generation's workers that have not exited",
            labels=["generation"],
        )
        for g, a in sorted(oldest.items()):
            age.add_metric([str(g)], a)
        yield age
        labels = ["generation", "worker"]
        reconnects = CounterMetricFamily(
            "spectral_worker_reconnects",
            "Times a worker's database connection dropped and was being reopened",
            labels=labels,
        )
        handled = CounterMetricFamily(
            "spectral_worker_events_handled",
            "Handler calls whose effect committed",
            labels=[*labels, "handler"],
        )
        failed = CounterMetricFamily(
            "spectral_worker_handler_failures",
            "Handler calls that raised",
            labels=[*labels, "handler"],
        )
        retried = CounterMetricFamily(
            "spectral_worker_events_retried",
            "Rows re-pended with backoff after the handler failed on them",
            labels=[*labels, "handler"],
        )
        dead = CounterMetricFamily(
            "spectral_worker_events_dead",
            "Rows that ended dead after the handler failed on them (handler "
            '"unroutable": no handler takes the topic)',
            labels=[*labels, "handler"],
        )
        duration = HistogramMetricFamily(
            "spectral_worker_handler_duration_seconds",
            "Duration of one handler call (inside its transaction)",
            labels=[*labels, "handler"],
        )
        batch = HistogramMetricFamily(
            "spectral_worker_claim_batch_rows",
            "Rows per non-empty claim",
            labels=labels,
        )
        for w in workers:
            key = [str(w.generation), w.id]
            reconnects.add_metric(key, w.reconnects)
            snap: dict[str, Any] | None = w.metrics
            if not snap or snap.get("v") != SNAPSHOT_VERSION:
                continue
            bounds = snap.get("buckets", {})
            for name, h in sorted(snap.get("handlers", {}).items()):
                hk = [*key, name]
                handled.add_metric(hk, h.get("handled", 0))
                failed.add_metric(hk, h.get("failed", 0))
                retried.add_metric(hk, h.get("retried", 0))
                dead.add_metric(hk, h.get("dead", 0))
                d = h.get("duration_s", {})
                duration.add_metric(
                    hk,
                    cumulative_buckets(bounds.get("duration_s", ()), d.get("counts", ())),
                    d.get("sum", 0.0),
                )
            c = snap.get("claim_batch_rows", {})
            batch.add_metric(
                key,
                cumulative_buckets(bounds.get("claim_batch_rows", ()), c.get("counts", ())),
                c.get("sum", 0.0),
            )
        yield from (reconnects, handled, failed, retried, dead, duration, batch)
