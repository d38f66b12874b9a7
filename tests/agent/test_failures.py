"""How turns fail: unwired domains, budgets, transient and permanent model errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from spectral_core import Settings
from spectral_core.agent import AgentConfig, CallPolicy, TurnBudget
from spectral_core.db import Database
from spectral_core.health import check_llm_credentials
from spectral_core.outbox import RetryPolicy
from spectral_core.testing import read_calls, write_script

from .helpers import agent_settings, observe, rows, running_agent, wait_for

pytestmark = pytest.mark.anyio

DECIDE = [{"content": {"action": "hold"}}]


def failed(url: str) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT payload FROM core.outbox WHERE topic = 'world.failed' ORDER BY id")


async def test_domain_without_credential_fails_clearly_and_alone(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Events for a domain with an empty or no credential end dead with the reason (after
    the outbox's retries); /health reports the empty one unwired; the wired domain's turn
    in the same batch completes."""
    script = write_script(tmp_path / "s.json", DECIDE)
    s = agent_settings(settings, llm_credential={"alpha": "sk-alpha", "beta": ""})
    gen = s.generation or 0
    observe(conn, gen, domain="beta", key="b1")
    observe(conn, gen, domain="gamma", key="g1")
    observe(conn, gen, domain="alpha", key="a1")
    async with running_agent(s, db, script, retry=RetryPolicy(2, 0.01, 0.05)):
        # (the harness registers no handler for world.decided, so that row may end dead
        # too: count only the observations)
        await wait_for(
            lambda: (
                rows(
                    db_url,
                    "SELECT count(*) FROM core.outbox WHERE "
                    "status = 'dead' AND topic = 'world.observe'",
                )
                == [(2,)]
            )
        )
        await wait_for(
            lambda: rows(db_url, "SELECT 1 FROM core.outbox WHERE topic = 'world.decided'")
        )
    dead = dict(
        rows(
            db_url,
            "SELECT idempotency_key, last_error FROM core.outbox "
            "WHERE status = 'dead' AND topic = 'world.observe'",
        )
    )
    assert "no LLM credential configured for domain 'beta'" in dead["b1"]
    assert "SPECTRAL_LLM_CREDENTIAL__GAMMA" in dead["g1"]
    assert "workers.world_agent.observe" in dead["b1"]
    assert rows(db_url, "SELECT thread_id, status FROM agent.turns") == [("acme:alpha:a1", "done")]
    assert [c["domain"] for c in read_calls(script)] == ["alpha", "alpha"]
    health = check_llm_credentials(s.llm_credential)
    assert health["llm_credential:alpha"][0].status == "pass"
    assert health["llm_credential:beta"][0].status != "pass"
    assert "llm_credential:gamma" not in health
    assert "sk-alpha" not in repr(health)


async def test_step_budget_ends_the_turn_with_a_clear_error(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A model that keeps calling tools is stopped at the step budget: the turn is dead
    (no retry) with the reason and world.failed is published."""
    script = write_script(
        tmp_path / "s.json",
        [{"tool_calls": [{"name": "read_fact", "args": {"key": "x"}}]}],
        repeat_last=True,
    )
    s = agent_settings(settings)
    observe(conn, s.generation or 0)
    config = AgentConfig.from_settings(s, budget=TurnBudget(max_steps=3, max_tokens=10_000))
    async with running_agent(s, db, script, config=config):
        await wait_for(lambda: failed(db_url))
    [(status, attempts, error)] = rows(
        db_url, "SELECT status, attempts, last_error FROM agent.turns"
    )
    assert (status, attempts) == ("dead", 1)
    assert "TurnBudgetExceeded" in error and "step budget (3 model calls)" in error
    [(payload,)] = failed(db_url)
    assert payload["error_type"] == "TurnBudgetExceeded"
    assert len([c for c in read_calls(script) if c["phase"] == "done"]) == 3


async def test_token_budget_ends_the_turn(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Token usage is summed over the turn's calls; at the token budget the turn ends."""
    script = write_script(
        tmp_path / "s.json",
        [{"tool_calls": [{"name": "read_fact", "args": {"key": "x"}}], "input_tokens": 600}],
        repeat_last=True,
    )
    s = agent_settings(settings)
    observe(conn, s.generation or 0)
    config = AgentConfig.from_settings(s, budget=TurnBudget(max_steps=10, max_tokens=1000))
    async with running_agent(s, db, script, config=config):
        await wait_for(lambda: failed(db_url))
    [(error,)] = rows(db_url, "SELECT last_error FROM agent.turns")
    assert "token budget (1000 tokens)" in error


async def test_transient_model_errors_are_retried_with_backoff(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Two transient failures of one LLM call are retried inside the call policy; the turn
    completes on its first attempt."""
    script = write_script(tmp_path / "s.json", [{"content": {"ok": 1}, "fail_times": 2}])
    s = agent_settings(settings)
    observe(conn, s.generation or 0)
    config = AgentConfig.from_settings(
        s, policy=CallPolicy(timeout_s=5, retries=3, backoff_base_s=0.05)
    )
    async with running_agent(s, db, script, config=config):
        await wait_for(
            lambda: rows(db_url, "SELECT 1 FROM core.outbox WHERE topic = 'world.decided'")
        )
    phases = [c["phase"] for c in read_calls(script)]
    assert phases == ["start", "start", "start", "done"]
    assert rows(db_url, "SELECT status, attempts FROM agent.turns") == [("done", 1)]


async def test_model_timeout_exhausts_retries_then_the_turn_is_retried_later(
    settings: Settings, db: Database, db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """An LLM call that outlives its timeout on every retry makes the turn fail transiently:
    re-pended with backoff, and dead once out of attempts, with the reason."""
    script = write_script(tmp_path / "s.json", [{"content": "late", "delay_s": 2.0}])
    s = agent_settings(settings)
    observe(conn, s.generation or 0)
    config = AgentConfig.from_settings(
        s,
        max_attempts=2,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        policy=CallPolicy(timeout_s=0.2, retries=1, backoff_base_s=0.01),
    )
    async with running_agent(s, db, script, config=config):
        await wait_for(lambda: failed(db_url))
    [(status, attempts, error)] = rows(
        db_url, "SELECT status, attempts, last_error FROM agent.turns"
    )
    assert (status, attempts) == ("dead", 2)
    assert "ModelUnavailable" in error and "timed out" in error
    assert [c["phase"] for c in read_calls(script)] == ["start"] * 4
