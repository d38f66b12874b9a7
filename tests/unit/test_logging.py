"""The production log format: one JSON object per line with an ISO-8601 UTC timestamp."""

from __future__ import annotations

import datetime as dt
import io
import re
import sys
from collections.abc import Iterator

import msgspec
import pytest
import structlog

from spectral_core.logging import configure_logging


class _Stdout:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    out = _Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging(fmt="json", level="info")
    yield out.buffer
    structlog.reset_defaults()


def test_json_lines_carry_fields_level_and_a_utc_microsecond_timestamp(
    captured: io.BytesIO,
) -> None:
    """Each line is one JSON object with the event, its fields, the level and a timestamp in
    structlog's ISO UTC format (``...T12:34:56.123456Z``) close to now; lines below the
    configured level are dropped."""
    log = structlog.get_logger("t")
    before = dt.datetime.now(dt.UTC)
    log.info("outbox.handled", event_id=7, topic="t.x")
    log.debug("hidden")
    log.warning("second", n=1)
    after = dt.datetime.now(dt.UTC)
    lines = [msgspec.json.decode(line) for line in captured.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["outbox.handled", "second"]
    first = lines[0]
    assert (first["event_id"], first["topic"], first["level"]) == (7, "t.x", "info")
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])
        stamp = dt.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert before - dt.timedelta(seconds=1) <= stamp <= after + dt.timedelta(seconds=1)


def test_json_lines_render_exceptions_and_structlog_level_names(captured: io.BytesIO) -> None:
    """The one-processor JSON tail keeps structlog's behaviour: `exception()` is level
    `error` with the formatted traceback under `exception` (no raw `exc_info`), `warn` is
    `warning`, context bound with `bind` and contextvars appear, and a value JSON cannot
    encode is written as its `str`."""
    log = structlog.get_logger("t")
    try:
        raise ZeroDivisionError("boom-7")
    except ZeroDivisionError:
        log.exception("failed", n=2)
    log.warn("old.alias")
    structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        log.bind(lane=3).info("bound", obj=_Opaque())
    finally:
        structlog.contextvars.clear_contextvars()
    lines = [msgspec.json.decode(line) for line in captured.getvalue().splitlines()]
    failed, alias, bound = lines
    assert (failed["level"], failed["n"]) == ("error", 2) and "exc_info" not in failed
    assert (
        failed["exception"].startswith("Traceback")
        and "ZeroDivisionError: boom-7" in (failed["exception"])
    )
    assert alias["level"] == "warning"
    assert (bound["lane"], bound["request_id"], bound["obj"]) == (3, "r-1", "opaque!")


class _Opaque:
    def __str__(self) -> str:
        return "opaque!"
