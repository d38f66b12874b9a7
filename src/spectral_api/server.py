"""The HTTP server of ``spectral-api``: uvicorn with httptools, guarded per connection.

uvicorn's httptools protocol has no limit on the size of a request head and no timeout
before a request or while one arrives.  :class:`GuardedHttpToolsProtocol` adds them
(ADR 0025), through the protocol's own callbacks and the ``http=`` protocol class that
``uvicorn.Config`` takes:

* **Head size**: the request line and headers together may be at most
  ``max_header_bytes``; the bytes of a head are counted *before* the parser sees them, so
  an oversize head is refused (``431``) after at most that many bytes were parsed, at a
  cost linear in them (httptools re-copies a header value on every read: unbounded, a
  32 MiB header cost a second of event loop).  A chunked body's trailer fields are
  bounded the same way: more than ``max_header_bytes`` bytes in a row that carry no body
  data are refused (``431``).
* **Idle**: a connection that sends nothing for ``idle_timeout_s`` after it opened, or
  between two requests (uvicorn's keep-alive timeout, set to the same value), is closed.
* **Head time**: a request's head must be complete ``header_timeout_s`` after its first
  byte (slowloris), else ``408`` and close.
* **Body time**: the body must be complete ``body_timeout_s`` after the head, else
  ``408`` and close; the request's ASGI ``receive`` returns ``http.disconnect``, so the
  route fails and its tenant's concurrency slot is released.
* **Connections**: beyond ``max_connections`` open connections a new one is answered
  ``503`` (``Retry-After: 1``) and closed at once.
* **Parser errors** (bad request line, bad ``Content-Length``, bad chunk): ``400``.

Every refusal is an ``application/problem+json`` body with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgspec
import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from spectral_core import Settings

from .errors import (
    PROBLEM_MEDIA_TYPE,
    BadRequest,
    HeaderTooLarge,
    HttpProblem,
    RequestTimeout,
    TooManyConnections,
    problem_for,
)

__all__ = ["GuardedHttpToolsProtocol", "HttpLimits", "protocol_class", "server_config"]

log = structlog.get_logger("spectral.api")

_IDLE: Final = 0  # between requests (or before the first): no request bytes yet
_HEAD: Final = 1  # the request line and headers are arriving
_BODY: Final = 2  # the head is complete, the body is arriving
_CLOSING: Final = 3  # a refusal was sent: what still arrives is discarded, then close
#: how long a refused connection keeps reading (and discarding) after its reply, so that
#: the client reads the reply instead of a reset (the "lingering close" of nginx/Apache)
LINGER_S: Final = 2.0
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Connection-level limits (``SPECTRAL_API_*``; see ``docs/reference/settings.md``)."""

    max_header_bytes: int = 16 * 1024
    idle_timeout_s: float = 5.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.api_max_header_bytes,
            idle_timeout_s=settings.api_idle_timeout_s,
            header_timeout_s=settings.api_header_timeout_s,
            body_timeout_s=settings.api_body_timeout_s,
            max_connections=settings.api_max_connections,
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`HttpLimits`.

    Use :func:`protocol_class` to bind the limits; the server builds one instance per
    connection.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()

    _phase: int = _IDLE
    _head_bytes: int = 0
    _body_bytes: int = 0  # body bytes the parser delivered (all requests of the connection)
    _framing_run: int = 0  # bytes in a row without body bytes while in _BODY (trailers)
    _timer: asyncio.TimerHandle | None = None
    _timer_at: float = 0.0  # when the pending timer fires
    _deadline: float | None = None  # when the current phase's limit passes
    _on_deadline: Callable[[], None] | None = None

    # -- connection -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(
                TooManyConnections(
                    f"the server holds {self.limits.max_connections} open connections; retry later"
                ),
                headers=((b"retry-after", b"1"),),
            )
            return
        self._arm(self.limits.idle_timeout_s, self._on_idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _CLOSING:
            return  # after a refusal: discarded
        while data:
            if self._phase == _IDLE:
                self._start_head()
            if self._phase == _BODY:
                self._feed_body(data)
                return
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) <= room:
                self._head_bytes += len(data)
                super().data_received(data)
                return
            # feed only what still fits: the parser never buffers more than the limit
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            super().data_received(part)
            if self.transport.is_closing():
                return
            if self._phase == _HEAD:  # the limit is reached and the head goes on
                self._refuse(
                    HeaderTooLarge(
                        f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                        limit=self.limits.max_header_bytes,
                    )
                )
                return

    def _feed_body(self, data: bytes) -> None:
        """Feed body bytes; refuse a run of non-body bytes longer than the head limit.

        A chunked body's trailer section reaches the parser as header fields, buffered at
        the same quadratic cost; chunk sizes and line ends between data are a few bytes.
        A read that delivers body bytes starts the run again.
        """
        before = self._body_bytes
        super().data_received(data)
        if self._phase != _BODY or self.transport.is_closing():
            return
        if self._body_bytes != before:
            self._framing_run = 0
            return
        self._framing_run += len(data)
        if self._framing_run > self.limits.max_header_bytes:
            self._refuse(
                HeaderTooLarge(
                    "the chunk framing or trailer fields exceed "
                    f"{self.limits.max_header_bytes} bytes",
                    limit=self.limits.max_header_bytes,
                )
            )

    # -- parser callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == _IDLE:  # a pipelined request began inside a body's read
            self._start_head()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = _BODY
        self._framing_run = 0
        self._arm(self.limits.body_timeout_s, self._on_body_timeout)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # no timer while the app works; uvicorn's keep-alive timer runs after the response
        self._phase = _IDLE
        self._head_bytes = 0
        self._cancel()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, as a problem (not ``text/plain``)."""
        self._refuse(BadRequest("malformed HTTP request (request line, header or framing)"))

    # -- timers -------------------------------------------------------------------------
    def _start_head(self) -> None:
        self._phase = _HEAD
        self._head_bytes = 0
        self._arm(self.limits.header_timeout_s, self._on_header_timeout)

    def _on_idle_timeout(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _on_header_timeout(self) -> None:
        self._refuse(
            RequestTimeout(
                f"the request head was not received within {self.limits.header_timeout_s:g} s"
            )
        )

    def _on_body_timeout(self) -> None:
        self._refuse(
            RequestTimeout(
                f"the request body was not received within {self.limits.body_timeout_s:g} s"
            )
        )

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay`` s unless re-armed or cancelled before.

        One timer per connection, moved lazily: a deadline later than the pending timer
        is only recorded (the timer re-arms itself when it fires early), so a keep-alive
        request's phases cost two clock reads, not four timer operations.
        """
        deadline = self.loop.time() + delay
        self._deadline, self._on_deadline = deadline, callback
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        deadline, callback = self._deadline, self._on_deadline
        if deadline is None or callback is None:
            return  # cancelled since
        if self.loop.time() < deadline:  # moved later since: wait for it
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._check_deadline)
            return
        self._deadline = self._on_deadline = None
        callback()

    def _cancel(self) -> None:
        """Drop the current deadline (a pending timer then finds nothing to do)."""
        self._deadline = self._on_deadline = None

    # -- refusals -----------------------------------------------------------------------
    def _refuse(self, problem: HttpProblem, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer ``problem`` unless another response is under way, then close.

        After a reply the connection is half-closed and lingers for :data:`LINGER_S`,
        discarding what the client still sends: closing with unread bytes would reset the
        connection, and a reset can destroy the reply before the client reads it.
        """
        self._cancel()
        if self.transport.is_closing() or self._phase == _CLOSING:
            return
        log.info(
            "api.http_refused",
            status=problem.status,
            reason=problem.slug,
            client=self.client[0] if self.client else None,
        )
        cycle = self.cycle
        if self._phase == _BODY and cycle is not None and not cycle.response_started:
            # the request's app is running without having answered: its receive() gets
            # http.disconnect now and anything it sends later goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
        elif not (cycle is None or cycle.response_complete):
            self.transport.close()  # a pipelined response is under way: no reply of ours
            return
        self._phase = _CLOSING
        self._write_problem(problem, headers)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._arm(LINGER_S, self.transport.close)

    def _write_problem(
        self, problem: HttpProblem, headers: tuple[tuple[bytes, bytes], ...]
    ) -> None:
        status, body, _ = problem_for(problem)
        payload = _encoder.encode(body)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, problem.title.encode())]
        lines += [b"%s: %s\r\n" % pair for pair in self.server_state.default_headers]
        lines += [b"%s: %s\r\n" % pair for pair in headers]
        lines.append(
            b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (PROBLEM_MEDIA_TYPE.encode(), len(payload))
        )
        self.transport.write(b"".join(lines) + payload)


def protocol_class(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` subclass bound to ``limits``."""
    return type("SpectralHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The ``uvicorn.Config`` of ``spectral-api`` (also used by the test server).

    Args:
        app: The ASGI application.
        settings: Host, port and the connection limits.
        overrides: Further ``uvicorn.Config`` arguments (e.g. ``timeout_graceful_shutdown``).
    """
    limits = HttpLimits.from_settings(settings)
    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "http": protocol_class(limits),
        "ws": "none",  # no WebSocket routes: an upgrade request is plain HTTP
        "timeout_keep_alive": limits.idle_timeout_s,
        **overrides,
    }
    return uvicorn.Config(app, **options)
