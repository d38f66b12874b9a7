"""Chat-model providers: the LangChain adapter and the factory chosen by settings.

``SPECTRAL_AGENT_PROVIDER`` picks the :data:`~spectral_core.agent.model.ModelFactory`:

- ``anthropic``: ``langchain-anthropic``'s ``ChatAnthropic`` (install the ``anthropic``
  extra), with the domain's credential as its API key, ``SPECTRAL_AGENT_MODEL``,
  ``SPECTRAL_AGENT_BASE_URL`` (a proxy or a test server) and the provider's own retries
  off (the agent's call policy retries);
- ``scripted``: :class:`spectral_core.testing.ScriptedModel` reading
  ``SPECTRAL_AGENT_SCRIPT_PATH`` (tests and the demo);
- ``module:function``: ``function(settings)`` returns a factory.

Credentials never appear in logs or reprs: the adapter's ``repr`` names the provider and
domain only, and LangChain keeps the key as a ``SecretStr``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..settings import Settings
from .model import ChatModel, Message, ModelFactory, Reply, ToolCall

__all__ = ["LangChainModel", "anthropic_factory", "load_model_factory"]


class LangChainModel:
    """Adapts a LangChain ``BaseChatModel`` to :class:`~spectral_core.agent.model.ChatModel`."""

    def __init__(self, chat_model: Any, *, provider: str, domain: str) -> None:
        self._chat = chat_model
        self.provider = provider
        self.domain = domain
        self._bound: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"LangChainModel(provider={self.provider!r}, domain={self.domain!r})"

    async def invoke(
        self, messages: Sequence[Message], *, tools: Sequence[dict[str, Any]]
    ) -> Reply:
        runnable = self._chat
        if tools:
            key = id(tools)
            runnable = self._bound.get(key)
            if runnable is None:
                runnable = self._bound[key] = self._chat.bind_tools(list(tools))
        result = await runnable.ainvoke(to_langchain(messages))
        return from_langchain(result)


def to_langchain(messages: Sequence[Message]) -> list[Any]:
    """Plain message dicts -> LangChain message objects."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[Any] = []
    for m in messages:
        role, content = m.get("role"), m.get("content", "")
        if role == "system":
            out.append(SystemMessage(content=content))
        elif role == "user":
            out.append(HumanMessage(content=content))
        elif role == "assistant":
            out.append(
                AIMessage(
                    content=content,
                    tool_calls=[
                        {
                            "id": tc["id"],
                            "name": tc["name"],
                            "args": tc.get("args") or {},
                            "type": "tool_call",
                        }
                        for tc in m.get("tool_calls", [])
                    ],
                )
            )
        elif role == "tool":
            out.append(ToolMessage(content=content, tool_call_id=m.get("tool_call_id", "")))
    return out


def from_langchain(message: Any) -> Reply:
    """A LangChain ``AIMessage`` -> :class:`Reply` (text, tool calls, token usage)."""
    content = message.content
    if isinstance(content, list):  # content blocks: keep the text parts
        content = "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    usage = getattr(message, "usage_metadata", None) or {}
    calls = [
        ToolCall(
            id=str(tc.get("id") or f"call_{i}"), name=tc["name"], args=dict(tc.get("args") or {})
        )
        for i, tc in enumerate(getattr(message, "tool_calls", None) or [])
    ]
    return Reply(
        content=str(content or ""),
        tool_calls=calls,
        input_tokens=int(usage.get("input_tokens", 0) or 0),
        output_tokens=int(usage.get("output_tokens", 0) or 0),
    )


def anthropic_factory(settings: Settings) -> ModelFactory:
    """Claude through ``langchain-anthropic``.

    Raises:
        ConfigError: the ``anthropic`` extra is not installed.
    """
    try:
        from langchain_anthropic import ChatAnthropic
    except ImportError as exc:
        raise ConfigError(
            "SPECTRAL_AGENT_PROVIDER=anthropic needs the 'anthropic' extra: "
            "pip install 'spectral[anthropic]'",
            field="agent_provider",
        ) from exc

    def factory(domain: str, credential: str) -> ChatModel:
        kwargs: dict[str, Any] = {
            "model": settings.agent_model,
            "api_key": credential,
            "max_retries": 0,
            "timeout": settings.agent_llm_timeout_s,
            "max_tokens": 4096,
        }
        if settings.agent_base_url:
            kwargs["base_url"] = settings.agent_base_url
        return LangChainModel(ChatAnthropic(**kwargs), provider="anthropic", domain=domain)

    return factory


def load_model_factory(settings: Settings) -> ModelFactory:
    """The model factory ``SPECTRAL_AGENT_PROVIDER`` names.

    Raises:
        ConfigError: unknown provider, missing extra or script path.
    """
    provider = settings.agent_provider
    if provider == "anthropic":
        return anthropic_factory(settings)
    if provider == "scripted":
        from ..testing import ScriptedModel

        if not settings.agent_script_path:
            raise ConfigError(
                "SPECTRAL_AGENT_PROVIDER=scripted needs SPECTRAL_AGENT_SCRIPT_PATH",
                field="agent_script_path",
            )
        path = settings.agent_script_path
        return lambda domain, credential: ScriptedModel(path, domain=domain)
    module_name, sep, attr = provider.partition(":")
    if not sep or not attr:
        raise ConfigError(
            f"unknown SPECTRAL_AGENT_PROVIDER {provider!r}: use anthropic, "
            "scripted or module:function",
            field="agent_provider",
        )
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"SPECTRAL_AGENT_PROVIDER: cannot load {provider!r}: {exc}", field="agent_provider"
        ) from None
    factory: ModelFactory = builder(settings)
    return factory
