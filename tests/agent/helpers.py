"""In-process harness for agent tests: consumer + heartbeat + agent runner on the test DB."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import psycopg

from spectral_core import Consumer, ConsumerConfig, HandlerRegistry, Heartbeat, Publisher, Settings
from spectral_core.agent import AgentConfig, AgentRunner, install, open_world_agent
from spectral_core.db import Database
from spectral_core.liveness import WorkerInfo
from spectral_core.outbox import RetryPolicy
from spectral_core.testing import ScriptedModel


def agent_settings(settings: Settings, **changes: Any) -> Settings:
    base: dict[str, Any] = {
        "llm_credential": {"alpha": "sk-alpha"},
        "agent_provider": "scripted",
        "agent_poll_interval_s": 0.1,
        "agent_concurrency": 4,
    }
    base.update(changes)
    return settings.replace(**base)


@asynccontextmanager
async def running_agent(
    settings: Settings,
    db: Database,
    script: Path,
    *,
    config: AgentConfig | None = None,
    registry: HandlerRegistry | None = None,
    retry: RetryPolicy | None = None,
) -> AsyncIterator[AgentRunner]:
    """Consumer, heartbeat and agent runner of one generation, like spectral-workers."""
    assert settings.generation is not None
    worker_id = uuid.uuid4()
    if registry is None:
        registry = HandlerRegistry()
        install(registry, settings)
    consumer = Consumer(
        db,
        generation=settings.generation,
        worker_id=worker_id,
        registry=registry,
        config=ConsumerConfig(
            batch_size=20, lanes=2, poll_interval_s=0.1, retry=retry or RetryPolicy(3, 0.01, 0.05)
        ),
    )
    heartbeat = Heartbeat(
        db, WorkerInfo(worker_id, settings.generation, "test", 0, "test"), interval_s=0.5
    )
    async with heartbeat:
        await heartbeat.register()
        async with _running(settings, db, script, worker_id, consumer, heartbeat, config) as agent:
            yield agent


@asynccontextmanager
async def _running(
    settings: Settings,
    db: Database,
    script: Path,
    worker_id: uuid.UUID,
    consumer: Consumer,
    heartbeat: Heartbeat,
    config: AgentConfig | None,
) -> AsyncIterator[AgentRunner]:
    assert settings.generation is not None

    def factory(domain: str, credential: str) -> ScriptedModel:
        return ScriptedModel(script, domain=domain)

    async with open_world_agent(
        settings,
        db,
        generation=settings.generation,
        worker_id=worker_id,
        factory=factory,
        config=config,
    ) as agent:
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat.run)
            tg.start_soon(consumer.run)
            tg.start_soon(partial(agent.run, heartbeat=heartbeat))
            try:
                yield agent
            finally:
                consumer.stop()
                agent.stop()
                tg.cancel_scope.cancel()


def observe(
    conn: psycopg.Connection[Any],
    generation: int,
    *,
    org: str = "acme",
    domain: str = "alpha",
    key: str = "ev-1",
    observation: Any = None,
) -> int:
    return Publisher(generation).publish(
        conn,
        "world.observe",
        {"org": org, "domain": domain, "observation": observation or {"price": 10}},
        idempotency_key=key,
    )


def rows(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql, params).fetchall()


async def wait_for(pred: Callable[[], Any], timeout: float = 20.0, step: float = 0.05) -> Any:
    with anyio.fail_after(timeout):
        while True:
            value = pred()
            if value:
                return value
            await anyio.sleep(step)
