"""The real-provider path (langchain-anthropic) exercised up to the HTTP boundary against a
local server: the request carries the domain's credential, replies and refusals map to the
agent's model interface, and the credential is never logged."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog

from spectral_core import Settings
from spectral_core.agent import CallPolicy, ModelError, ModelUnavailable, call_model
from spectral_core.agent.providers import anthropic_factory, load_model_factory
from spectral_core.agent.tools import TOOL_SPECS
from tests.tools import require_module

pytestmark = pytest.mark.anyio

SECRET = "sk-ant-test-credential-123"


class FakeAnthropic:
    """A local stand-in for the Messages API: records requests, answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.reply: dict[str, Any] = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [
                {"type": "text", "text": '{"action": "hold"}'},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "write_fact",
                    "input": {"key": "k", "value": 1},
                },
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 21, "output_tokens": 7},
        }
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append(
                    {"path": self.path, "headers": headers, "body": json.loads(body)}
                )
                if fake.status == 200:
                    data = json.dumps(fake.reply).encode()
                else:
                    data = json.dumps(
                        {
                            "type": "error",
                            "error": {
                                "type": "overloaded_error"
                                if fake.status == 529
                                else "authentication_error",
                                "message": "refused",
                            },
                        }
                    ).encode()
                self.send_response(fake.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def fake_api() -> Iterator[FakeAnthropic]:
    """The local Messages API; every test here also needs the ``anthropic`` extra."""
    require_module("langchain_anthropic")
    fake = FakeAnthropic()
    t = threading.Thread(target=fake.server.serve_forever, daemon=True)
    t.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        t.join(5)


def provider_settings(url: str) -> Settings:
    return Settings(
        agent_provider="anthropic",
        agent_base_url=url,
        agent_model="claude-test",
        llm_credential={"credit": SECRET},
    )


async def test_request_carries_the_domain_credential_and_reply_maps_back(
    fake_api: FakeAnthropic,
) -> None:
    """The adapter sends the domain's credential as the API key with the tool specs, and
    turns the reply (text, tool calls, token usage) into a Reply; nothing logs the key."""
    factory = load_model_factory(provider_settings(fake_api.url))
    model = factory("credit", SECRET)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "observe"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "toolu_0", "name": "read_fact", "args": {"key": "k"}}],
        },
        {"role": "tool", "tool_call_id": "toolu_0", "name": "read_fact", "content": "null"},
    ]
    with structlog.testing.capture_logs() as logs:
        reply = await call_model(model, messages, TOOL_SPECS, CallPolicy(timeout_s=10))
    [req] = fake_api.requests
    assert req["path"] == "/v1/messages"
    headers = req["headers"]  # the SDK sends the key as x-api-key or as a bearer token
    assert SECRET in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert req["body"]["model"] == "claude-test"
    assert {t["name"] for t in req["body"]["tools"]} == {t["name"] for t in TOOL_SPECS}
    assert req["body"]["system"] == "be brief" or "be brief" in json.dumps(req["body"]["system"])
    assert reply.content == '{"action": "hold"}'
    assert [(tc.id, tc.name, tc.args) for tc in reply.tool_calls] == [
        ("toolu_1", "write_fact", {"key": "k", "value": 1})
    ]
    assert (reply.input_tokens, reply.output_tokens) == (21, 7)
    assert SECRET not in repr(model) and SECRET not in repr(logs)
    assert SECRET not in repr(provider_settings(fake_api.url))


async def test_overloaded_provider_is_retried_then_unavailable(fake_api: FakeAnthropic) -> None:
    """A 529 (overloaded) is transient: retried with backoff, then ModelUnavailable (the
    turn will be retried later); the provider's own retries are off."""
    fake_api.status = 529
    model = anthropic_factory(provider_settings(fake_api.url))("credit", SECRET)
    with pytest.raises(ModelUnavailable) as info:
        await call_model(
            model,
            [{"role": "user", "content": "x"}],
            [],
            CallPolicy(timeout_s=10, retries=2, backoff_base_s=0.01),
        )
    assert len(fake_api.requests) == 3
    assert SECRET not in str(info.value)


async def test_refused_credential_is_permanent(fake_api: FakeAnthropic) -> None:
    """A 401 is not retried: ModelError, which ends the turn dead with the reason."""
    fake_api.status = 401
    model = anthropic_factory(provider_settings(fake_api.url))("credit", SECRET)
    with pytest.raises(ModelError) as info:
        await call_model(
            model,
            [{"role": "user", "content": "x"}],
            [],
            CallPolicy(timeout_s=10, retries=3, backoff_base_s=0.01),
        )
    assert not isinstance(info.value, ModelUnavailable)
    assert len(fake_api.requests) == 1
    assert SECRET not in str(info.value)
