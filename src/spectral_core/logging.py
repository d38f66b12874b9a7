"""structlog configuration, called only by entrypoints.

JSON lines (msgspec-encoded) in production, console rendering in development.  The core
modules only call ``structlog.get_logger(name)`` and never configure anything.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

__all__ = ["configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _json_default(obj: Any) -> Any:
    return str(obj)


def configure_logging(*, fmt: str = "json", level: str = "info") -> None:
    """Configure structlog for this process (JSON lines to stdout, or console)."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    else:
        encoder = msgspec.json.Encoder(enc_hook=_json_default)
        processors.append(
            structlog.processors.JSONRenderer(serializer=lambda o, **_: encoder.encode(o))
        )
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
