"""HTTP routes: ``/health``, ``/metrics``, ``/api/decide`` and the operator routes under
``/api/modules`` and the operator console's under ``/api/operator/``."""

from .decide import DecideEndpoint, DecideShortcut, decide_routes
from .health import health_routes
from .metrics import metrics_routes
from .modules import module_routes
from .operator import operator_routes

__all__ = [
    "DecideEndpoint",
    "DecideShortcut",
    "decide_routes",
    "health_routes",
    "metrics_routes",
    "module_routes",
    "operator_routes",
]
