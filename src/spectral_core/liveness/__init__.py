"""Worker liveness: the ``core.workers`` registry, heartbeat and recorded sessions."""

from .heartbeat import Heartbeat, WorkerInfo
from .sessions import SessionRecorder

__all__ = ["Heartbeat", "SessionRecorder", "WorkerInfo"]
