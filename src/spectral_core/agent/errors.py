"""The World Agent's errors (all rooted at :class:`~spectral_core.errors.SpectralError`).

``transient`` tells the turn runner what to do with a failed turn: a transient failure
re-pends the turn with backoff (its checkpoint keeps the progress); a permanent one ends it
``dead`` at once, with the reason, and publishes ``world.failed``.
"""

from __future__ import annotations

from ..errors import ConfigError, SpectralError

__all__ = [
    "AgentError",
    "AgentNotWired",
    "ModelError",
    "ModelUnavailable",
    "ScriptExhausted",
    "ToolError",
    "TurnBudgetExceeded",
]


class AgentError(SpectralError):
    """A World Agent turn failed."""

    transient: bool = False


class AgentNotWired(AgentError, ConfigError):
    """No LLM credential is configured for this domain."""

    exit_code = 1  # a per-domain condition, not a reason for the process not to start


class TurnBudgetExceeded(AgentError):
    """The turn exceeded its budget."""


class ModelError(AgentError):
    """The chat model refused the request."""


class ModelUnavailable(ModelError):
    """The chat model stayed unreachable or overloaded through every retry."""

    transient = True


class ToolError(AgentError):
    """A tool call was invalid."""


class ScriptExhausted(ModelError):
    """The scripted model has no reply for this step."""
