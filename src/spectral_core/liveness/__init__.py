"""Liveness: the ``core.workers`` and ``core.api_processes`` registries, heartbeats and
recorded sessions."""

from .fleet import ApiRegistry, FleetView
from .heartbeat import Heartbeat, WorkerInfo
from .sessions import SessionRecorder, session_application_name

__all__ = [
    "ApiRegistry",
    "FleetView",
    "Heartbeat",
    "SessionRecorder",
    "WorkerInfo",
    "session_application_name",
]
