"""HTTP routes: ``/health``, ``/api/decide`` and the operator routes under ``/api/modules``."""

from .decide import decide_routes
from .health import health_routes
from .modules import module_routes

__all__ = ["decide_routes", "health_routes", "module_routes"]
