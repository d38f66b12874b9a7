"""The rule for tests whose tool is missing: skip locally, fail under CI=true."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.tools import require_module, require_tool

NO_SUCH_TOOL = "spectral-no-such-tool-7f3a"
NO_SUCH_MODULE = "spectral_no_such_module_7f3a"


def outcome(call: Callable[[], object]) -> BaseException:
    """The skip / fail exception ``call`` raised (caught here, so it cannot skip this test)."""
    try:
        call()
    except BaseException as exc:  # pytest's Skipped and Failed are BaseExceptions
        return exc
    raise AssertionError("neither skipped nor failed")


def test_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CI, a test whose tool is not installed is skipped, naming the tool."""
    monkeypatch.delenv("CI", raising=False)
    for call, name in [
        (lambda: require_tool(NO_SUCH_TOOL), NO_SUCH_TOOL),
        (lambda: require_module(NO_SUCH_MODULE), NO_SUCH_MODULE),
    ]:
        exc = outcome(call)
        assert isinstance(exc, pytest.skip.Exception), exc
        assert name in str(exc)


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Under CI=true the same test fails: a green CI run cannot leave a check out."""
    monkeypatch.setenv("CI", value)
    for call, name in [
        (lambda: require_tool(NO_SUCH_TOOL), NO_SUCH_TOOL),
        (lambda: require_module(NO_SUCH_MODULE), NO_SUCH_MODULE),
    ]:
        exc = outcome(call)
        assert isinstance(exc, pytest.fail.Exception), exc
        assert name in str(exc)


@pytest.mark.parametrize("value", ["false", ""])
def test_ci_false_still_skips(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """``CI=false`` (or empty) is not CI."""
    monkeypatch.setenv("CI", value)
    assert isinstance(outcome(lambda: require_tool(NO_SUCH_TOOL)), pytest.skip.Exception)


def test_installed_tool_is_found_on_path_or_at_a_fallback() -> None:
    """An installed tool's path is returned, from PATH or from an explicit fallback path."""
    assert require_tool("sh").endswith("/sh")
    assert require_tool(NO_SUCH_TOOL, "/nonexistent/x", "/bin/sh") == "/bin/sh"
    assert require_module("json").__name__ == "json"
