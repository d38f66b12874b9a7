"""``spectral env``: the shell lines that point a second terminal at ``spectral up``.

``spectral up`` records what it runs in ``<SPECTRAL_HOME_DIR>/up.json`` (mode 0600: the
database URL may carry a password) and removes it when it stops.  ``spectral env`` prints
``export`` lines for it, so ``eval "$(spectral env)"`` is all a second terminal needs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

from spectral_core import Settings
from spectral_core.errors import ConfigError

from ._out import add_json_flag, to_json

__all__ = ["clear_state", "exports", "read_state", "register", "state_path", "write_state"]


def state_path(settings: Settings) -> Path:
    return Path(settings.home_dir) / "up.json"


def write_state(settings: Settings, state: dict[str, Any]) -> Path:
    """Record a running ``spectral up`` (owner-only file: the URL may hold a password)."""
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**state, "pid": os.getpid()}, f)
    return path


def clear_state(settings: Settings) -> None:
    """Remove the record if this process wrote it (a `spectral up --no-run` beside a
    running `spectral up` leaves the running one's record alone)."""
    path = state_path(settings)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def exports(state: dict[str, Any]) -> str:
    """The ``export`` lines for a recorded ``spectral up``."""
    return "\n".join(
        [
            f"export SPECTRAL_DATABASE_URL={shlex.quote(state['database_url'])}",
            f"export SPECTRAL_GENERATION={int(state['generation'])}",
        ]
    )


def read_state(settings: Settings) -> dict[str, Any]:
    """The recorded state of a ``spectral up`` that is still running.

    Raises:
        ConfigError: none is running from this folder.
    """
    path = state_path(settings)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"no `spectral up` is running from this folder ({path} is missing or stale): "
            "start one with `spectral up`"
        ) from None
    return state


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "env",
        help="print the export lines that point a shell at the running `spectral up`",
        description='Use as: eval "$(spectral env)"',
    )
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    state = read_state(settings)
    if args.json:
        to_json(
            {
                "database_url": state["database_url"],
                "generation": state["generation"],
                "api_url": state.get("api_url"),
            }
        )
    else:
        print(exports(state))
    return 0
