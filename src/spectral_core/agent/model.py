"""The chat-model boundary: a minimal async interface, per-domain factories, and the
call policy (timeout, retries with backoff on transient errors, per-turn budget).

Messages are plain dicts so they checkpoint as they are (no framework classes in the
graph state)::

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id": str, "name": str, "args": dict}],   # assistant only
     "tool_call_id": str, "name": str}                          # tool only

A model is anything with ``async def invoke(messages, *, tools) -> Reply``; a
:data:`ModelFactory` turns ``(domain, credential)`` into one.  Real providers live in
:mod:`spectral_core.agent.providers`, the scripted fake in :mod:`spectral_core.testing`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import anyio
import msgspec
import structlog

from ..outbox.backoff import next_delay
from .errors import ModelError, ModelUnavailable, TurnBudgetExceeded

__all__ = [
    "CallPolicy",
    "ChatModel",
    "Message",
    "ModelFactory",
    "Reply",
    "ToolCall",
    "TurnBudget",
    "call_model",
    "is_transient",
]

log = structlog.get_logger("spectral.agent")

Message = dict[str, Any]


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    args: dict[str, Any] = {}


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """One assistant reply."""

    content: str = ""
    tool_calls: list[ToolCall] = []
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_message(self) -> Message:
        msg: Message = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [msgspec.to_builtins(tc) for tc in self.tool_calls]
        return msg


@runtime_checkable
class ChatModel(Protocol):
    """The one method the agent needs from a chat model."""

    async def invoke(
        self, messages: Sequence[Message], *, tools: Sequence[dict[str, Any]]
    ) -> Reply: ...


#: ``factory(domain, credential) -> ChatModel``; called once per wired domain at startup.
ModelFactory = Callable[[str, str], ChatModel]


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How one LLM call is made: per-attempt timeout, retries on transient errors."""

    timeout_s: float = 120.0
    retries: int = 3
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 10.0


@dataclass(frozen=True, slots=True)
class TurnBudget:
    """What one turn may spend: model calls (steps) and tokens (input + output)."""

    max_steps: int = 12
    max_tokens: int = 50_000

    def check_before_call(self, steps: int, tokens: int) -> None:
        """Raises:
        TurnBudgetExceeded: the turn already used its steps or tokens.
        """
        if steps >= self.max_steps:
            raise TurnBudgetExceeded(
                f"turn exceeded its step budget ({self.max_steps} model calls)",
                budget="steps",
                limit=self.max_steps,
                used=steps,
            )
        if tokens >= self.max_tokens:
            raise TurnBudgetExceeded(
                f"turn exceeded its token budget ({self.max_tokens} tokens)",
                budget="tokens",
                limit=self.max_tokens,
                used=tokens,
            )


_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
_TRANSIENT_NAMES = (
    "Timeout",
    "Connection",
    "RateLimit",
    "Overloaded",
    "InternalServer",
    "ServiceUnavailable",
)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: timeouts, connection failures, 408/409/429/5xx."""
    if isinstance(exc, TimeoutError | ConnectionError | ModelUnavailable):
        return True
    if isinstance(exc, ModelError):
        return False
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS or status >= 500
    name = type(exc).__name__
    return any(part in name for part in _TRANSIENT_NAMES)


async def call_model(
    model: ChatModel,
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]],
    policy: CallPolicy,
) -> Reply:
    """Call ``model`` with a timeout per attempt, retrying transient failures.

    Raises:
        ModelUnavailable: every attempt failed transiently (the turn is retried later).
        ModelError: the model refused the request (permanent).
    """
    attempt = 0
    while True:
        try:
            with anyio.fail_after(policy.timeout_s):
                reply = await model.invoke(messages, tools=tools)
        except ModelError:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            log.warning(
                "agent.model_failed",
                attempt=attempt + 1,
                transient=transient,
                error_type=type(exc).__name__,
            )
            if not transient:
                raise ModelError(
                    f"model refused the request: {_summary(exc)}", error_type=type(exc).__name__
                ) from exc
            if attempt >= policy.retries:
                raise ModelUnavailable(
                    f"model unavailable after {attempt + 1} attempts: {_summary(exc)}",
                    attempts=attempt + 1,
                ) from exc
            attempt += 1
            await anyio.sleep(
                next_delay(attempt, base_s=policy.backoff_base_s, cap_s=policy.backoff_cap_s)
            )
            continue
        if not isinstance(reply, Reply):
            raise ModelError(f"model returned {type(reply).__name__}, expected Reply")
        return reply


def _summary(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
