"""The worker process: boot checks, then consumer + reaper + heartbeat + the World Agent's
turn runner in one task group.

Exit codes: 0 clean shutdown; 3 cannot start (bad settings, generation missing or never
allocated: a supervisor must not restart it); 1 anything else (database unreachable at
boot or for longer than the outage limit, a crashed component).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable, Sequence

import anyio
import structlog

from spectral_core import (
    Consumer,
    ConsumerConfig,
    HandlerRegistry,
    Heartbeat,
    Reaper,
    Settings,
    WorkerInfo,
)
from spectral_core.agent import AgentRunner, open_world_agent
from spectral_core.boot import booted, event_loop_options, run_process

from .handlers import build_registry

log = structlog.get_logger("spectral.workers")


async def run(settings: Settings, registry: HandlerRegistry) -> int:
    """Run the worker until SIGTERM/SIGINT; return the exit code."""
    async with booted(settings, process="workers") as (db, rt):
        generation = rt.generation
        structlog.contextvars.bind_contextvars(worker_id=str(rt.instance_id))
        consumer = Consumer(
            db,
            generation=generation,
            worker_id=rt.instance_id,
            registry=registry,
            config=ConsumerConfig.from_settings(settings),
        )
        heartbeat = Heartbeat(
            db,
            WorkerInfo.from_runtime(rt),
            interval_s=settings.heartbeat_interval_s,
            state=lambda: consumer.state,
        )
        consumer.on_state_change = heartbeat.poke
        reaper = Reaper(
            generation,
            stale_after_s=settings.worker_stale_after_s,
            max_attempts=settings.outbox_max_attempts,
        )
        async with (
            heartbeat,
            open_world_agent(
                settings, db, generation=generation, worker_id=rt.instance_id
            ) as agent,
        ):
            await heartbeat.register()
            log.info(
                "worker.started",
                handlers=registry.names,
                version=rt.version,
                event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            )
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        _signals, consumer, agent, tg.cancel_scope, settings.shutdown_grace_s
                    )
                    tg.start_soon(heartbeat.run)
                    tg.start_soon(reaper.run, db, settings.reaper_interval_s)
                    async with anyio.create_task_group() as work:
                        # agent turns run beside the consumer, never inside its batches
                        work.start_soon(agent.run)
                        await consumer.run()
                        agent.stop()
                    tg.cancel_scope.cancel()
            finally:
                await consumer.release_inflight()
                await agent.release_inflight()
                await heartbeat.mark_exited()
            log.info("worker.stopped", handled=consumer.handled, turns=agent.completed)
    return 0


async def _signals(
    consumer: Consumer, agent: AgentRunner, scope: anyio.CancelScope, grace_s: float
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if consumer.stopping:
                log.warning("worker.forced_exit", signal=signal.Signals(signum).name)
                os._exit(1)
            log.info("worker.stopping", signal=signal.Signals(signum).name, grace_s=grace_s)
            consumer.stop()
            agent.stop()
            # lanes finish their batch and turns their graph within the grace period, else
            # they are cancelled (transactions roll back, turns keep their checkpoints) and
            # the rows and turns are released
            _arm_deadline(scope, grace_s)


def _arm_deadline(scope: anyio.CancelScope, grace_s: float) -> None:
    scope.deadline = min(scope.deadline, anyio.current_time() + grace_s)


def main(
    argv: Sequence[str] | None = None,
    registry_factory: Callable[[Settings], HandlerRegistry] = build_registry,
) -> int:
    """Console entrypoint ``spectral-workers``."""
    argparse.ArgumentParser(
        prog="spectral-workers",
        description="spectral worker runtime: outbox consumer, reaper, heartbeat and the World "
        "Agent for one generation (settings from SPECTRAL_* variables; no HTTP surface).",
    ).parse_args(argv)

    def start(settings: Settings) -> int:
        return anyio.run(
            run,
            settings,
            registry_factory(settings),
            backend="asyncio",
            backend_options=event_loop_options(settings),
        )

    return run_process("workers", os.environ, start)
