"""The worker process: boot checks, then consumer + reaper + heartbeat + the World Agent's
turn runner in one task group.

Exit codes: 0 clean shutdown; 3 cannot start (bad settings, generation missing or never
allocated: a supervisor must not restart it); 1 anything else (database unreachable at
boot or for longer than the outage limit, a crashed component).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
from collections.abc import Callable, Sequence
from functools import partial

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
from spectral_core.boot import booted, event_loop_options, freeze_startup_heap, run_process
from spectral_core.lifetime import LINGER_S, ShutdownPlan, arm_hard_exit, watch_parent
from spectral_core.metrics.otlp import pushing_worker_metrics
from spectral_core.retention import Pruner, RetentionConfig

from .handlers import build_registry

log = structlog.get_logger("spectral.workers")


async def run(settings: Settings, registry: HandlerRegistry) -> int:
    """Run the worker until SIGTERM/SIGINT; return the exit code.

    The process's body (called once by :func:`main`): it arms hard exits.
    """
    plan = ShutdownPlan(settings.shutdown_grace_s)
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
            sessions=consumer.sessions,
            metrics=consumer.stats.snapshot,
        )
        consumer.on_state_change = heartbeat.poke
        reaper = Reaper(
            generation,
            stale_after_s=settings.worker_stale_after_s,
            max_attempts=settings.outbox_max_attempts,
            worker_id=rt.instance_id,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            retention_s=settings.worker_retention_s,
        )
        async with (
            heartbeat,
            open_world_agent(
                settings, db, generation=generation, worker_id=rt.instance_id
            ) as agent,
            # the counters over OTLP too, when SPECTRAL_OTLP_ENDPOINT is set (ADR 0029)
            pushing_worker_metrics(settings, consumer.stats, worker_id=str(rt.instance_id)),
        ):
            await heartbeat.register()
            # what exists now lives as long as the process: a full collection no longer
            # walks it (one took tens of ms, the p99 at 1,000 events/s; ADR 0047)
            freeze_startup_heap()
            log.info(
                "worker.started",
                handlers=registry.names,
                version=rt.version,
                event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
                heap_frozen=gc.get_freeze_count(),
            )
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(
                        _signals, consumer, agent, tg.cancel_scope, plan, settings.parent_pid
                    )
                    tg.start_soon(heartbeat.run)
                    tg.start_soon(
                        partial(reaper.run, heartbeat=heartbeat), db, settings.reaper_interval_s
                    )
                    if settings.retention_enabled:
                        tg.start_soon(Pruner(RetentionConfig.from_settings(settings)).run, db)
                    async with anyio.create_task_group() as work:
                        # agent turns run beside the consumer, never inside its batches
                        work.start_soon(partial(agent.run, heartbeat=heartbeat))
                        await consumer.run()
                        agent.stop()
                    tg.cancel_scope.cancel()
            finally:
                await _final_writes(consumer, agent, heartbeat, plan.final_writes_s)
        log.info("worker.stopped", handled=consumer.handled, turns=agent.completed)
        # closing the pool is bounded; whatever else is left must not keep us alive
        arm_hard_exit(LINGER_S, code=0, reason="still running after worker.stopped")
    return 0


async def _final_writes(
    consumer: Consumer, agent: AgentRunner, heartbeat: Heartbeat, budget_s: float
) -> None:
    """Release held rows and turns and record ``exited``, side by side, all within
    ``budget_s`` (each is shielded from cancellation and bounded on its own; what cannot
    be written in time is recovered by the reaper)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.release_inflight, budget_s)
        tg.start_soon(agent.release_inflight, budget_s)
        tg.start_soon(heartbeat.mark_exited, budget_s)


async def _signals(
    consumer: Consumer,
    agent: AgentRunner,
    scope: anyio.CancelScope,
    plan: ShutdownPlan,
    parent_pid: int | None,
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        # a supervisor that dies (SIGKILL, OOM) cannot forward SIGTERM: its death is one
        watch_parent(parent_pid, process="worker")
        async for signum in signals:
            if consumer.stopping:
                log.warning("worker.forced_exit", signal=signal.Signals(signum).name)
                os._exit(1)
            log.info("worker.stopping", signal=signal.Signals(signum).name, grace_s=plan.grace_s)
            # the last resort if the bounded stop below still overruns the grace
            arm_hard_exit(plan.hard_exit_s, code=1, reason="stop exceeded the grace period")
            consumer.stop()
            agent.stop()
            # lanes finish their batch and turns their graph within the work part of the
            # grace, else they are cancelled (transactions roll back, turns keep their
            # checkpoints); the rest of the grace releases the rows and turns
            _arm_deadline(scope, plan.work_s)


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
