"""The World Agent graph (LangGraph ``StateGraph``).

``think`` makes exactly one model call and returns its reply; ``act`` runs the tool calls
of that reply; ``finish`` extracts the decision.  The state holds every message, so with a
checkpointer and ``durability="sync"`` each completed node (each completed LLM call) is in
PostgreSQL before the next node starts: a turn re-run after a crash resumes at the first
node that did not complete and never repeats a completed call.

The graph is compiled per turn, closed over the turn's :class:`ToolContext` scope (org,
domain, thread), so tools cannot be pointed at another org by the model.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Annotated, Any, TypedDict

import msgspec
import structlog
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from ..errors import DatabaseError
from ..tracing import maybe_span
from .errors import ToolError
from .model import CallPolicy, ChatModel, Message, TurnBudget, call_model
from .tools import PlatformTools, ToolContext

__all__ = ["TurnState", "build_graph", "initial_state"]

log = structlog.get_logger("spectral.agent")

SYSTEM_PROMPT = (
    "You are the World Agent of organisation {org}, domain {domain}. You observe events, "
    "keep the domain's world facts current with your tools, and may draft decision-module "
    "versions for operator approval. Finish with a short JSON decision."
)


class TurnState(TypedDict, total=False):
    org: str
    domain: str
    thread_id: str
    messages: Annotated[list[Message], operator.add]
    steps: int
    tokens: int
    decision: Any


def initial_state(org: str, domain: str, thread_id: str, observation: Any) -> TurnState:
    """The input of a new turn: the system prompt and the observed event."""
    return {
        "org": org,
        "domain": domain,
        "thread_id": thread_id,
        "steps": 0,
        "tokens": 0,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT.format(org=org, domain=domain)},
            {
                "role": "user",
                "content": msgspec.json.encode(
                    {"thread_id": thread_id, "observation": observation}
                ).decode(),
            },
        ],
    }


def build_graph(
    model: ChatModel,
    tools: PlatformTools,
    *,
    org: str,
    domain: str,
    thread_id: str,
    policy: CallPolicy,
    budget: TurnBudget,
    checkpointer: BaseCheckpointSaver[Any] | None,
) -> CompiledStateGraph[Any]:
    """Compile the turn graph for one (org, domain, thread)."""
    specs: Sequence[dict[str, Any]] = tools.specs

    async def think(state: TurnState) -> dict[str, Any]:
        steps, tokens = state.get("steps", 0), state.get("tokens", 0)
        budget.check_before_call(steps, tokens)
        with maybe_span("agent.model_call", attributes={"spectral.agent.step": steps + 1}):
            reply = await call_model(model, state["messages"], specs, policy)
        log.info(
            "agent.model_called",
            thread_id=thread_id,
            step=steps + 1,
            tokens=reply.tokens,
            tool_calls=len(reply.tool_calls),
        )
        return {
            "messages": [reply.as_message()],
            "steps": steps + 1,
            "tokens": tokens + reply.tokens,
        }

    async def act(state: TurnState) -> dict[str, Any]:
        last = state["messages"][-1]
        out: list[Message] = []
        for call in last.get("tool_calls", []):
            ctx = ToolContext(
                org=org, domain=domain, thread_id=thread_id, tool_call_id=str(call.get("id", ""))
            )
            name = str(call.get("name", ""))
            try:
                with maybe_span(
                    f"agent.tool_call {name}", attributes={"spectral.agent.tool": name}
                ):
                    result = await tools.call(ctx, name, call.get("args") or {})
                content = msgspec.json.encode(result).decode()
            except ToolError as exc:  # the model gets the reason and may correct itself
                content = msgspec.json.encode({"error": exc.message}).decode()
            except DatabaseError:
                raise
            out.append(
                {"role": "tool", "tool_call_id": ctx.tool_call_id, "name": name, "content": content}
            )
        return {"messages": out}

    def finish(state: TurnState) -> dict[str, Any]:
        last = state["messages"][-1]
        content = last.get("content", "")
        try:
            decision: Any = msgspec.json.decode(content) if content else None
        except msgspec.DecodeError:
            decision = {"text": content}
        return {"decision": decision}

    def route(state: TurnState) -> str:
        return "act" if state["messages"][-1].get("tool_calls") else "finish"

    builder: StateGraph[Any] = StateGraph(TurnState)
    builder.add_node("think", think)
    builder.add_node("act", act)
    builder.add_node("finish", finish)
    builder.add_edge(START, "think")
    builder.add_conditional_edges("think", route, {"act": "act", "finish": "finish"})
    builder.add_edge("act", "think")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=checkpointer)
