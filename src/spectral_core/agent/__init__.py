"""The World Agent runtime: a LangGraph graph checkpointed in PostgreSQL, driven by
outbox events, off the decision path.

Wiring (what ``spectral-workers`` does)::

    registry.register(HANDLER_NAME, OBSERVE_TOPIC, make_observe_handler(settings.llm_credential))
    async with open_pools(settings) as db, open_world_agent(settings, db, ...) as agent:
        ...  # run agent.run() beside the consumer; agent.stop() on SIGTERM

See ``docs/reference/world-agent.md`` and ``docs/adr/0010-world-agent.md``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from ..db import Database
from ..errors import ConfigError
from ..outbox import HandlerRegistry
from ..settings import Settings
from .checkpoint import checkpointer_kwargs, open_checkpointer_pool, saver_for_turn
from .errors import (
    AgentError,
    AgentNotWired,
    ModelError,
    ModelUnavailable,
    ScriptExhausted,
    ToolError,
    TurnBudgetExceeded,
)
from .graph import build_graph, initial_state
from .model import CallPolicy, ChatModel, ModelFactory, Reply, ToolCall, TurnBudget, call_model
from .providers import LangChainModel, load_model_factory
from .runner import (
    DECIDED_TOPIC,
    FAILED_TOPIC,
    HANDLER_NAME,
    OBSERVE_TOPIC,
    AgentConfig,
    AgentRunner,
    ObservePayload,
    make_observe_handler,
)
from .tools import PlatformTools, ToolContext
from .turns import Turn, TurnQueue, enqueue_turn, thread_id_for

__all__ = [
    "DECIDED_TOPIC",
    "FAILED_TOPIC",
    "HANDLER_NAME",
    "OBSERVE_TOPIC",
    "AgentConfig",
    "AgentError",
    "AgentNotWired",
    "AgentRunner",
    "CallPolicy",
    "ChatModel",
    "LangChainModel",
    "ModelError",
    "ModelFactory",
    "ModelUnavailable",
    "ObservePayload",
    "PlatformTools",
    "Reply",
    "ScriptExhausted",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "Turn",
    "TurnBudget",
    "TurnBudgetExceeded",
    "TurnQueue",
    "build_graph",
    "build_models",
    "call_model",
    "checkpointer_kwargs",
    "enqueue_turn",
    "initial_state",
    "install",
    "load_model_factory",
    "make_observe_handler",
    "open_checkpointer_pool",
    "open_world_agent",
    "saver_for_turn",
    "thread_id_for",
]

log = structlog.get_logger("spectral.agent")


def install(registry: HandlerRegistry, settings: Settings) -> None:
    """Register ``workers.world_agent.observe`` on ``world.observe``."""
    registry.register(HANDLER_NAME, OBSERVE_TOPIC, make_observe_handler(settings.llm_credential))


def build_models(settings: Settings, factory: ModelFactory | None = None) -> dict[str, ChatModel]:
    """One chat model per domain with a non-empty credential.

    Raises:
        ConfigError: the provider cannot be loaded (missing extra, bad setting).
    """
    wired = {d: c for d, c in settings.llm_credential.items() if c}
    if not wired:
        return {}
    factory = factory or load_model_factory(settings)
    return {domain: factory(domain, credential) for domain, credential in sorted(wired.items())}


@asynccontextmanager
async def open_world_agent(
    settings: Settings,
    db: Database,
    *,
    generation: int,
    worker_id: uuid.UUID,
    factory: ModelFactory | None = None,
    config: AgentConfig | None = None,
) -> AsyncIterator[AgentRunner]:
    """Wire the agent once per process: checkpointer pool, platform tools, models.

    Raises:
        ConfigError: the model provider cannot be loaded.
        ConnectionLost: the checkpointer database is unreachable.
    """
    unavailable: str | None = None
    try:
        models = build_models(settings, factory)
    except ConfigError as exc:
        # the agent is off the decision path: a missing provider fails its turns (with
        # this reason), never the worker that also runs the outbox
        models, unavailable = {}, exc.message
        log.error("agent.provider_unavailable", error=exc.message)
    tools = PlatformTools(db, generation, max_payload_bytes=settings.outbox_max_payload_bytes)
    async with open_checkpointer_pool(settings) as pool:
        runner = AgentRunner(
            db,
            pool,
            tools,
            models,
            generation=generation,
            worker_id=worker_id,
            config=config or AgentConfig.from_settings(settings),
            unavailable=unavailable,
        )
        log.info("agent.wired", domains=sorted(models), concurrency=runner.config.concurrency)
        yield runner
