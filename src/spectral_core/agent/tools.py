"""The agent's tools: platform dependencies wired once, scoped per invocation.

:class:`PlatformTools` is built once at worker startup with the process's database pool
and generation.  Each tool invocation receives a :class:`ToolContext` naming the turn's
``org``, ``domain`` and thread: every statement is filtered by that org and domain, and
the model's arguments never carry them, so a turn cannot touch another org's facts.

Tools are idempotent per tool call, because a crash between a tool's effect and the next
checkpoint re-runs the tool step: facts are upserts, a drafted module is keyed by
``(thread_id, tool_call_id)``, a published event's idempotency key is derived from them.
Drafting never approves: approval is an operator's signature in the module store.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..db import Database
from ..db._wrap import wrap_errors
from ..outbox import Publisher
from ..sql import query
from .errors import ToolError

__all__ = ["TOOL_SPECS", "PlatformTools", "ToolContext"]

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}$")
_TOPIC = re.compile(r"^world\.[a-z0-9_][a-z0-9_.]{0,100}$")
_RESERVED_TOPICS = {"world.observe", "world.decided", "world.failed"}
_MAX_VALUE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling: the turn's org, domain and thread, and the tool call's id."""

    org: str
    domain: str
    thread_id: str
    tool_call_id: str


def _spec(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
    }


#: Tool descriptions in the JSON-schema shape chat models accept.
TOOL_SPECS: list[dict[str, Any]] = [
    _spec(
        "read_fact",
        "Read one world fact of this domain by key (null if unknown).",
        {"key": {"type": "string"}},
        ["key"],
    ),
    _spec(
        "list_facts",
        "List world facts of this domain whose key starts with a prefix.",
        {"prefix": {"type": "string"}},
        [],
    ),
    _spec(
        "write_fact",
        "Set a world fact of this domain (any JSON value).",
        {"key": {"type": "string"}, "value": {}},
        ["key", "value"],
    ),
    _spec(
        "publish_event",
        "Publish an event (topic 'world.<name>') for other services.",
        {"topic": {"type": "string"}, "payload": {"type": "object"}},
        ["topic", "payload"],
    ),
    _spec(
        "draft_module",
        "Draft a decision-module version for operator approval.",
        {
            "action": {"type": "string"},
            "world_model_version": {"type": "string"},
            "source": {"type": "string"},
            "note": {"type": "string"},
        },
        ["action", "world_model_version", "source"],
    ),
]

ToolFn = Callable[[ToolContext, dict[str, Any]], Awaitable[Any]]


class PlatformTools:
    """The platform dependencies of the agent, wired once per process."""

    def __init__(
        self, db: Database, generation: int, *, max_payload_bytes: int = 256 * 1024
    ) -> None:
        self.db = db
        self.publisher = Publisher(generation, max_payload_bytes=max_payload_bytes)
        self._tools: dict[str, ToolFn] = {
            "read_fact": self.read_fact,
            "list_facts": self.list_facts,
            "write_fact": self.write_fact,
            "publish_event": self.publish_event,
            "draft_module": self.draft_module,
        }

    @property
    def specs(self) -> list[dict[str, Any]]:
        return TOOL_SPECS

    async def call(self, ctx: ToolContext, name: str, args: dict[str, Any]) -> Any:
        """Run tool ``name`` for the turn described by ``ctx``.

        Raises:
            ToolError: unknown tool or invalid arguments (reported back to the model).
            DatabaseError: the database failed (the turn is retried).
        """
        fn = self._tools.get(name)
        if fn is None:
            raise ToolError(f"unknown tool {name!r}", tool=name)
        if not isinstance(args, dict):
            raise ToolError("tool arguments must be an object", tool=name)
        return await fn(ctx, args)

    # -- the tools --------------------------------------------------------------------
    async def read_fact(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        key = _key(args.get("key"))
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                cur = await conn.execute(
                    query("select_fact"), {"org": ctx.org, "domain": ctx.domain, "key": key}
                )
                row = await cur.fetchone()
        return row[0] if row else None

    async def list_facts(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        prefix = args.get("prefix", "") or ""
        if not isinstance(prefix, str) or len(prefix) > 200:
            raise ToolError("prefix must be a string", tool="list_facts")
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                cur = await conn.execute(
                    query("list_facts"),
                    {
                        "org": ctx.org,
                        "domain": ctx.domain,
                        "prefix": prefix.replace("\\", "\\\\")
                        .replace("%", "\\%")
                        .replace("_", "\\_"),
                        "limit": 100,
                    },
                )
                rows = await cur.fetchall()
        return {k: v for k, v in rows}

    async def write_fact(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        key = _key(args.get("key"))
        if "value" not in args:
            raise ToolError("write_fact needs a value", tool="write_fact")
        encoded = msgspec.json.encode(args["value"])
        if len(encoded) > _MAX_VALUE_BYTES:
            raise ToolError(
                f"fact value is larger than {_MAX_VALUE_BYTES} bytes", tool="write_fact"
            )
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                await conn.execute(
                    query("upsert_fact"),
                    {
                        "org": ctx.org,
                        "domain": ctx.domain,
                        "key": key,
                        "value": encoded.decode(),
                        "thread_id": ctx.thread_id,
                    },
                )
        return {"ok": True, "key": key}

    async def publish_event(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        topic = args.get("topic")
        if not isinstance(topic, str) or not _TOPIC.match(topic) or topic in _RESERVED_TOPICS:
            raise ToolError(
                "topic must be 'world.<name>' and not a reserved agent topic", tool="publish_event"
            )
        payload = {
            "org": ctx.org,
            "domain": ctx.domain,
            "thread_id": ctx.thread_id,
            "data": args.get("payload") or {},
        }
        key = f"{ctx.thread_id}:{ctx.tool_call_id}"
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                event_id = await self.publisher.publish_async(
                    conn, topic, payload, idempotency_key=key
                )
        return {"ok": True, "event_id": event_id}

    async def draft_module(self, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        fields = {}
        for name in ("action", "world_model_version", "source"):
            value = args.get(name)
            if not isinstance(value, str) or not value:
                raise ToolError(f"draft_module needs a non-empty {name}", tool="draft_module")
            fields[name] = value
        note = args.get("note")
        with wrap_errors():
            async with self.db.pool.connection() as conn:
                cur = await conn.execute(
                    query("insert_module_draft"),
                    {
                        **fields,
                        "note": note if isinstance(note, str) else None,
                        "org": ctx.org,
                        "domain": ctx.domain,
                        "thread_id": ctx.thread_id,
                        "tool_call_id": ctx.tool_call_id,
                    },
                )
                row = await cur.fetchone()
        assert row is not None
        return {"ok": True, "draft_id": row[0], "status": "awaiting_approval"}


def _key(value: Any) -> str:
    if not isinstance(value, str) or not _KEY.match(value):
        raise ToolError("fact key: 1-200 characters of letters, digits and _ . : / -")
    return value
