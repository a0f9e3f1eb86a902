"""Messages OpenAI's clients send that the model inference API's partner models refuse,
through the gateway with the OpenAI SDK: a conversation with tool calls replayed to a
Mistral model (the assistant message a client rebuilds from a stream's deltas keeps their
`index`: the OpenAI SDK's stream helper, Vercel's AI SDK; Mistral's models answer 422
"unknown field: parameter index is not a valid field"), and a `developer` message to
DeepSeek-R1 (422, its role refused), as the emulator answers them."""

from __future__ import annotations

from typing import Any

import httpx

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk

MISTRAL = EmulatedDeployment("Mistral-Large-2411", "Mistral-Large-2411", "chat", rpm=60_000)
DEEPSEEK = EmulatedDeployment("DeepSeek-R1", "DeepSeek-R1", "chat", rpm=60_000)
URL = "/models/chat/completions?api-version=2024-05-01-preview"
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


def _history(call: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "Look up the weather"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]


def test_the_emulators_mistral_refuses_a_tool_calls_index() -> None:
    with pool_emulator(MISTRAL) as emulator:
        call = {"id": "abc123def", "type": "function", "index": 0,
                "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}
        answer = httpx.post(
            emulator.url + "/models/chat/completions?api-version=2024-05-01-preview",
            headers={"api-key": AZURE_KEY},
            json={"model": "Mistral-Large-2411", "messages": _history(call), "tools": TOOLS})
        assert answer.status_code == 422
        assert "parameter index is not a valid field" in answer.text


def test_a_streamed_tool_call_replayed_reaches_mistral_without_its_index() -> None:
    with pool_emulator(MISTRAL) as emulator:
        settings = load_settings({
            "models": {"mistral": [{"deployment_name": "Mistral-Large-2411", "api": "foundry",
                                    "endpoint": emulator.url, "api_key": AZURE_KEY}]},
            "client_keys": [CLIENT_KEY],
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            client = sdk(gateway)
            with client.chat.completions.stream(
                    model="mistral", messages=_history_start(), tools=TOOLS,
                    tool_choice="required") as events:
                message = events.get_final_completion().choices[0].message
            replayed = message.model_dump(exclude_none=True)
            calls = replayed["tool_calls"]
            assert calls and "index" in calls[0]  # as the SDK rebuilt it
            follow_up = client.chat.completions.with_raw_response.create(
                model="mistral", tools=TOOLS, messages=[
                    *_history_start(), replayed,
                    {"role": "tool", "tool_call_id": calls[0]["id"], "content": "sunny"}])
            assert follow_up.parse().choices[0].message
            assert "dropped:messages.tool_calls.index" in follow_up.headers["x-proxy-adapted"]
            sent = emulator.last()
            assert sent["status"] == 200
            assert "index" not in sent["json"]["messages"][1]["tool_calls"][0]


def _history_start() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "Look up the weather"}]


def test_a_developer_message_reaches_deepseek_as_a_system_one() -> None:
    messages = [{"role": "developer", "content": "Answer in one word."},
                {"role": "user", "content": "Capital of France?"}]
    with pool_emulator(DEEPSEEK) as emulator:
        refused = httpx.post(emulator.url + URL, headers={"api-key": AZURE_KEY},
                             json={"model": "DeepSeek-R1", "messages": messages})
        assert refused.status_code == 422
        assert refused.json()["error"]["details"][0]["loc"] == ["body", "messages", 0, "role"]
        settings = load_settings({
            "models": {"deepseek": [{"deployment_name": "DeepSeek-R1", "api": "foundry",
                                     "endpoint": emulator.url, "api_key": AZURE_KEY}]},
            "client_keys": [CLIENT_KEY],
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            raw = sdk(gateway).chat.completions.with_raw_response.create(
                model="deepseek", messages=messages)
            assert raw.parse().choices[0].message.content
            assert raw.headers["x-proxy-adapted"] == "developer->system"
            sent = emulator.last()
            assert sent["status"] == 200
            assert [m["role"] for m in sent["json"]["messages"]] == ["system", "user"]
