"""``GET /health``: liveness probe and deploy go/no-go (``application/health+json``)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from spectral_core.health import HEALTH_MEDIA_TYPE

__all__ = ["health_routes"]

_encoder = msgspec.json.Encoder()


async def health(request: Request) -> Response:
    """200 on pass/warn, 503 on fail; cached ~0.5 s by the probe."""
    report = await request.app.state.services.health.report()
    body = b"" if request.method == "HEAD" else _encoder.encode(report)
    return Response(
        body,
        status_code=report.http_status,
        media_type=HEALTH_MEDIA_TYPE,
        headers={"Cache-Control": "no-store"},
    )


def health_routes() -> list[BaseRoute]:
    return [Route("/health", health, methods=["GET", "HEAD"])]
