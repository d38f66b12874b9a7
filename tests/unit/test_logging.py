"""The production log format: one JSON object per line with an ISO-8601 UTC timestamp."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from spectral_cli.main import main as cli_main
from spectral_core.logging import configure_logging


class _Stdout:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    out = _Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    root = logging.getLogger()
    before = list(root.handlers), root.level
    configure_logging(fmt="json", level="info")
    yield out.buffer
    root.handlers[:], root.level = before
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


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_stdlib_records_share_the_format_and_the_stream(fmt: str) -> None:
    """Lines of libraries that log through the standard library (psycopg_pool's "error
    connecting" warnings, uvicorn) come out in the configured format on the configured stream,
    at the configured level, instead of as raw text beside the JSON lines."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging(fmt=fmt, level="warning", stream=stream)
        pool_log = logging.getLogger("psycopg.pool")
        pool_log.warning("error connecting in %r: %s", "pool-1", "refused")
        pool_log.info("below the level")
        structlog.get_logger("t").warning("ours")
        text = stream.buffer.getvalue().decode()  # type: ignore[attr-defined]
    finally:
        root.handlers[:], root.level = before
        structlog.reset_defaults()
    lines = text.splitlines()
    assert len(lines) == 2, text
    if fmt == "json":
        pool, ours = (msgspec.json.decode(line) for line in lines)
        assert pool["event"] == "error connecting in 'pool-1': refused"
        assert (pool["level"], pool["logger"]) == ("warning", "psycopg.pool")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", pool["timestamp"])
        assert ours["event"] == "ours"
    else:
        assert "error connecting in 'pool-1': refused" in lines[0] and "warning" in lines[0]


def test_cli_run_in_process_leaves_loggers_capturable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``spectral`` verb run in-process (the CLI tests, tools embedding the CLI) does not
    cache loggers: a library logger first used under the CLI's configuration follows the
    configuration that comes after it.  A cached one kept the CLI's level filter and
    processors for the rest of the process, so log assertions in later tests failed."""
    for name in [n for n in os.environ if n.startswith("SPECTRAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPECTRAL_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("SPECTRAL_HOME_DIR", str(tmp_path / ".spectral"))
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        assert cli_main(["modules", "keygen"]) == 0, capsys.readouterr()
        proxy = structlog.get_logger("spectral.test")
        proxy.info("first use, under the CLI's configuration")
    finally:
        root.handlers[:], root.level = before
        structlog.reset_defaults()
    with capture_logs() as logs:
        proxy.debug("after the CLI")
    assert [e["event"] for e in logs] == ["after the CLI"]
