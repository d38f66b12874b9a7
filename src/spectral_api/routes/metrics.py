"""``GET /metrics``: Prometheus text format, behind an operator key (ADR 0029).

The body is rendered by ``prometheus_client`` from the app's registry: the API's own
instruments, the process collector, and the queue gauges and workers' counters read from
PostgreSQL (cached for ``SPECTRAL_METRICS_CACHE_S``, one read however many scrapers).
With ``SPECTRAL_METRICS_AUTH=operator`` (the default) the scraper sends an operator API
key as ``Authorization: Bearer <token>``; a tenant key gets 403, no key 401.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from spectral_api.errors import Forbidden
from spectral_core.errors import TenantError

__all__ = ["metrics_routes"]


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TenantError("invalid API key", reason="bad_key")
    return token.strip()


async def metrics(request: Request) -> Response:
    services = request.app.state.services
    if services.settings.metrics_auth == "operator":
        who = await services.authenticator.authenticate(_bearer(request))
        if not who.operator:
            raise Forbidden("GET /metrics needs an operator API key")
    await services.queue_stats.refresh()
    return Response(
        generate_latest(services.metrics.registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )


def metrics_routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics, methods=["GET"])]
