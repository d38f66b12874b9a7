"""Worker liveness: the ``core.workers`` registry and heartbeat."""

from .heartbeat import Heartbeat, WorkerInfo

__all__ = ["Heartbeat", "WorkerInfo"]
