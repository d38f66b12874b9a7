"""The operator console's static files at ``/console/`` (issue 18, ADR 0038).

The console is a static app (``apps/console/`` in a checkout, owned by its own build; a
copy ships in the wheel as ``spectral_api/console``).  The API serves it from the same
origin as ``/api/``, so the session cookie (``SameSite=Strict``, ``Path=/api/``) works
locally without any cross-origin setup.  ``GET /console`` redirects to ``/console/``.

The response headers follow the app's Pages ``_headers`` file (its ``/*`` block and an
exact-path block), so what runs locally has the Content-Security-Policy that ships; without
that file a strict default applies.  A folder that does not exist answers 404 saying which
folder and which setting, instead of failing at start-up (the API runs without a console).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from spectral_core import Settings

from .errors import PROBLEM_MEDIA_TYPE

__all__ = ["DEFAULT_HEADERS", "console_dir", "console_routes", "pages_headers"]

#: headers of every console file when the app has no ``_headers`` file
DEFAULT_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_MAX_HEADERS_FILE: Final = 64 * 1024


def console_dir(settings: Settings) -> Path:
    """The folder served at ``/console/``: ``SPECTRAL_CONSOLE_DIR``, else the checkout's
    ``apps/console`` when it exists, else the copy in this package (which may be absent)."""
    if settings.console_dir:
        return Path(settings.console_dir)
    here = Path(__file__).resolve().parent
    checkout = here.parent.parent / "apps" / "console"
    if checkout.is_dir():
        return checkout
    return here / "console"


def pages_headers(folder: Path) -> dict[str, dict[str, str]]:
    """The blocks of a Cloudflare Pages ``_headers`` file: path pattern -> headers.

    Only what the console needs: a line starting at column 0 opens a block for that path,
    an indented ``Name: value`` line adds a header to it; comments (``#``) and blank lines
    are skipped.  A missing, oversize or unreadable file gives no blocks.
    """
    path = folder / "_headers"
    try:
        if path.stat().st_size > _MAX_HEADERS_FILE:
            return {}
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            current = blocks.setdefault(line.strip(), {})
            continue
        name, sep, value = line.strip().partition(":")
        if current is not None and sep and name.strip():
            current[name.strip()] = value.strip()
    return blocks


class _ConsoleFiles:
    """StaticFiles over the folder, with the app's headers; 404 with a reason when the
    folder does not exist."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: StaticFiles | None = None
        self._blocks: dict[str, dict[str, str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.folder.is_dir():
            body = msgspec.json.encode(
                {
                    "type": "urn:spectral:problem:console-not-found",
                    "title": "Console not installed",
                    "status": 404,
                    "detail": f"the console's folder {self.folder} does not exist; build "
                    "apps/console or point SPECTRAL_CONSOLE_DIR at its files",
                }
            )
            await Response(body, status_code=404, media_type=PROBLEM_MEDIA_TYPE)(
                scope, receive, send
            )
            return
        if self._files is None:
            self._files = StaticFiles(directory=self.folder, html=True)
            self._blocks = pages_headers(self.folder)
        blocks = self._blocks or {}
        extra = dict(blocks.get("/*", DEFAULT_HEADERS if not blocks else {}))
        path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
        relative = path[len(root) :] if root and path.startswith(root) else path
        extra.update(blocks.get("/" + relative.lstrip("/"), {}))
        extra.setdefault("Cache-Control", "no-cache")
        pairs = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

        async def send_with_headers(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))  # type: ignore[call-overload]
                have = {name for name, _ in headers}
                headers.extend(p for p in pairs if p[0] not in have)
                message = {**message, "headers": headers}
            await send(message)

        await self._files(scope, receive, send_with_headers)  # type: ignore[arg-type]


async def _redirect(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)


def console_routes(settings: Settings) -> list[BaseRoute]:
    """``/console`` (a redirect) and ``/console/...`` (the files)."""
    return [
        Route("/console", _redirect, methods=["GET", "HEAD"]),
        Mount("/console", app=_ConsoleFiles(console_dir(settings))),
    ]
