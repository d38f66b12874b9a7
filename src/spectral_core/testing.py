"""Test doubles users can import.

:class:`ScriptedModel` is a chat model that answers from a script file and records every
call in a log file beside it, so it works across processes (a worker that is SIGKILLed
and restarted reads the same script and appends to the same log), and a test can assert
that no completed call was repeated.

Script (JSON)::

    {"replies": [
        {"content": "", "tool_calls": [{"name": "write_fact", "args": {"key": "k", "value": 1}}]},
        {"content": {"decision": "ok"}, "delay_s": 1.0, "output_tokens": 12}
     ],
     "repeat_last": false}

The reply for a call is chosen by the turn's progress, not by a global counter: the
``n``-th reply answers a conversation that already holds ``n`` assistant messages.  So
concurrent turns each walk the script from the top, and a call re-issued after a crash
gets the same reply.  A reply may carry ``"fail_times": k``: its first ``k`` attempts raise
a transient ``ConnectionError`` (``"fail": "fatal"`` raises a permanent error instead).

Call log (JSON lines, ``<script>.calls.jsonl``): ``{"phase": "start" | "done", "step",
"conversation", "digest", "domain", "pid", "t"}``; ``digest`` hashes the exact input.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from .agent.errors import ModelError, ScriptExhausted
from .agent.model import Message, Reply, ToolCall

__all__ = [
    "ScriptedModel",
    "calls_log_path",
    "read_calls",
    "repeated_completed_calls",
    "write_script",
]


def calls_log_path(script_path: str | os.PathLike[str]) -> Path:
    """Where :class:`ScriptedModel` records the calls for ``script_path``."""
    return Path(f"{os.fspath(script_path)}.calls.jsonl")


def write_script(
    path: str | os.PathLike[str], replies: Sequence[dict[str, Any]], *, repeat_last: bool = False
) -> Path:
    """Write a script file (and clear its call log); return its path."""
    p = Path(path)
    p.write_bytes(msgspec.json.encode({"replies": list(replies), "repeat_last": repeat_last}))
    calls_log_path(p).unlink(missing_ok=True)
    return p


def read_calls(script_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every recorded call record, in order."""
    log = calls_log_path(script_path)
    if not log.exists():
        return []
    return [msgspec.json.decode(line) for line in log.read_bytes().splitlines() if line.strip()]


def repeated_completed_calls(script_path: str | os.PathLike[str]) -> list[str]:
    """Digests of calls that completed more than once (should be empty)."""
    done = Counter(r["digest"] for r in read_calls(script_path) if r["phase"] == "done")
    return sorted(d for d, n in done.items() if n > 1)


def _digest(obj: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(obj)).hexdigest()[:20]


class ScriptedModel:
    """A :class:`~spectral_core.agent.model.ChatModel` that replays a script file."""

    def __init__(self, script_path: str | os.PathLike[str], *, domain: str = "") -> None:
        self.path = Path(script_path)
        self.log_path = calls_log_path(self.path)
        self.domain = domain
        self._script: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"ScriptedModel({str(self.path)!r}, domain={self.domain!r})"

    def _load(self) -> dict[str, Any]:
        if self._script is None:
            self._script = msgspec.json.decode(self.path.read_bytes())
        return self._script

    def _record(self, **fields: Any) -> None:
        line = (
            msgspec.json.encode(
                {**fields, "domain": self.domain, "pid": os.getpid(), "t": time.time()}
            )
            + b"\n"
        )
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one O_APPEND write per record: whole lines, any process
        finally:
            os.close(fd)

    async def invoke(
        self, messages: Sequence[Message], *, tools: Sequence[dict[str, Any]]
    ) -> Reply:
        script = self._load()
        replies: list[dict[str, Any]] = script.get("replies", [])
        step = sum(1 for m in messages if m.get("role") == "assistant")
        conversation = _digest(list(messages[:2]))
        digest = _digest(list(messages))
        if step >= len(replies):
            if not (script.get("repeat_last") and replies):
                raise ScriptExhausted(f"the script has no reply for step {step}", step=step)
            spec = replies[-1]
        else:
            spec = replies[step]
        earlier = sum(
            1 for r in read_calls(self.path) if r["phase"] == "start" and r["digest"] == digest
        )
        self._record(phase="start", step=step, conversation=conversation, digest=digest)
        if spec.get("delay_s"):
            await anyio.sleep(float(spec["delay_s"]))
        if earlier < int(spec.get("fail_times", 0)):
            raise ConnectionError("scripted transient failure")
        if spec.get("fail") == "fatal":
            raise ModelError("scripted permanent failure")
        content = spec.get("content", "")
        if not isinstance(content, str):
            content = msgspec.json.encode(content).decode()
        calls = [
            ToolCall(id=f"call_{step}_{i}", name=tc["name"], args=tc.get("args") or {})
            for i, tc in enumerate(spec.get("tool_calls", []))
        ]
        reply = Reply(
            content=content,
            tool_calls=calls,
            input_tokens=int(spec.get("input_tokens", 0)),
            output_tokens=int(spec.get("output_tokens", 0)),
        )
        self._record(phase="done", step=step, conversation=conversation, digest=digest)
        return reply
