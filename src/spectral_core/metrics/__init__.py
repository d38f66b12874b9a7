"""Metrics (ADR 0029): queue truth from PostgreSQL and the workers' process counters.

- :class:`~spectral_core.metrics.queue.QueueStats` reads the queue gauges with cheap,
  index-only statements, cached;
- :class:`~spectral_core.metrics.worker.WorkerStats` is what a worker counts, snapshotted
  into ``core.workers.metrics`` by its heartbeat;
- :class:`~spectral_core.metrics.exposition.QueueCollector` exposes both to
  ``prometheus_client`` (the API's ``/metrics``).  It is imported from its module, not
  here, so that the workers, which only count, do not import ``prometheus_client``.
"""

from .queue import QueueSnapshot, QueueStats, WorkerRow
from .worker import HandlerStats, Histogram, WorkerStats

__all__ = [
    "HandlerStats",
    "Histogram",
    "QueueSnapshot",
    "QueueStats",
    "WorkerRow",
    "WorkerStats",
]
