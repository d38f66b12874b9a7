"""structlog configuration, called only by entrypoints.

JSON lines (msgspec-encoded) in production, console rendering in development.  The core
modules only call ``structlog.get_logger(name)`` and never configure anything.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

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


class _UtcIsoStamper:
    """``timestamp`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (structlog's ``TimeStamper(fmt="iso",
    utc=True)`` format) with the date-and-seconds prefix formatted once per second: the
    worker writes one line per handled event, so the stamper is on the hot path
    (``bench/bench_logging.py``; figures in docs/performance.md)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def stamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((now - second) * 1e6):06d}Z"

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict["timestamp"] = self.stamp()
        return event_dict


class _JsonLine:
    """The tail of the JSON chain in one processor: structlog's ``add_log_level`` (the
    filtering bound logger already calls ``warn`` ``warning`` and ``exception`` ``error``),
    the UTC stamp, ``format_exc_info`` (only when the call passed ``exc_info``) and the
    msgspec encoding, with the same keys in the same order.  The worker writes a line per
    handled event, so the chain is on its hot path; ``bench/bench_logging.py`` compares it
    with the four stock processors."""

    __slots__ = ("_encode", "_stamper")

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder(enc_hook=_json_default).encode
        self._stamper = _UtcIsoStamper()

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> bytes:
        event_dict["level"] = name
        event_dict["timestamp"] = self._stamper.stamp()
        if "exc_info" in event_dict:
            event_dict = structlog.processors.format_exc_info(logger, name, event_dict)
        return self._encode(event_dict)


def configure_logging(
    *,
    fmt: str = "json",
    level: str = "info",
    stream: TextIO | None = None,
    cache_loggers: bool = True,
) -> None:
    """Configure structlog for this process: JSON lines (or console rendering) to ``stream``.

    ``stream`` defaults to stdout for JSON (the servers' log stream) and stderr for the
    console format; the operator CLI passes stderr, so its stdout carries only results.
    Records of the standard library's ``logging`` (psycopg_pool, uvicorn, langgraph...) go
    through the same renderer at the same level, so every line of a process has one shape.

    ``cache_loggers`` binds each logger once, on its first use (the servers' hot paths); a
    cached logger keeps this configuration for the rest of the process, so code that runs
    inside a longer-lived process (the CLI called in-process) passes False.
    """
    # trace_id / span_id of the active span, when tracing is on (ADR 0029); imported here,
    # not at module level, so that importing this module does not import OpenTelemetry
    from .tracing import add_trace_id

    processors: list[Any] = [structlog.contextvars.merge_contextvars, add_trace_id]
    renderer: Any
    if fmt == "console":
        out = stream or sys.stderr
        tail: list[Any] = [
            structlog.processors.add_log_level,
            _UtcIsoStamper(),
            structlog.processors.format_exc_info,
        ]
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        processors += [*tail, renderer]
        factory: Any = structlog.PrintLoggerFactory(out)
        foreign: list[Any] = [*tail, renderer]
    else:
        out = stream or sys.stdout
        processors.append(_JsonLine())
        factory = structlog.BytesLoggerFactory(out.buffer)
        foreign = [_JsonText()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=cache_loggers,
    )
    _route_stdlib(out, _LEVELS[level], foreign)


class _JsonText(_JsonLine):
    """:class:`_JsonLine` for the standard library's formatter, which wants text."""

    __slots__ = ()

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> str:  # type: ignore[override]
        return super().__call__(logger, name, event_dict).decode()


def _route_stdlib(out: TextIO, level: int, renderer_chain: list[Any]) -> None:
    """One handler on the root logger rendering stdlib records as structlog lines."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *renderer_chain,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_spectral", False)]:
        root.removeHandler(old)
    handler._spectral = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
