"""A Foundry chat stream's usage: Azure AI model inference puts it on the stream's last
frame with a `finish_reason`, of its own accord (its API takes no `stream_options`;
Microsoft's how-to for reasoning models on Foundry Models shows the frame). The emulator
sends it so; through the gateway the client gets it and the ledger records it as
measured, the same counts as the non-streamed answer's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk
from tests.e2e.test_ledger import records

DEPLOYMENT = EmulatedDeployment("DeepSeek-R1", "DeepSeek-R1", "chat", rpm=60_000)
REQUEST: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Tell me about gateways"}], "seed": 4}
TOOLS = [{"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _frames(text: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in text.split("\n\n")
            if line.startswith("data: {")]


def test_the_emulator_sends_the_usage_on_the_last_finish_frame() -> None:
    with pool_emulator(DEPLOYMENT) as emulator:
        url = emulator.url + "/models/chat/completions?api-version=2024-05-01-preview"
        for extra in ({}, {"tools": TOOLS, "tool_choice": "required"}):
            body = {"model": "DeepSeek-R1", **REQUEST, **extra}
            answer = httpx.post(url, json=body, headers={"api-key": AZURE_KEY}).json()
            streamed = httpx.post(url, json={**body, "stream": True},
                                  headers={"api-key": AZURE_KEY})
            frames = _frames(streamed.text)
            last = frames[-1]
            assert last["choices"][0]["finish_reason"] in ("stop", "tool_calls")
            assert {k: last["usage"][k] for k in COUNTS} == {
                k: answer["usage"][k] for k in COUNTS}
            assert all("usage" not in frame for frame in frames[:-1])


def test_a_foundry_stream_is_recorded_at_its_own_usage(tmp_path: Path) -> None:
    with pool_emulator(DEPLOYMENT) as emulator:
        raw = load_settings({
            "models": {"deepseek": [{"deployment_name": "DeepSeek-R1", "api": "foundry",
                                     "endpoint": emulator.url, "api_key": AZURE_KEY}]},
            "client_keys": [CLIENT_KEY],
        }, {}).model_dump()
        settings = Settings.model_validate(
            {**raw, "database": f"sqlite://{tmp_path / 'gateway.db'}"})
        with pool_gateway(settings, FakeClock()) as gateway:
            client = sdk(gateway)
            answer = client.chat.completions.create(model="deepseek", **REQUEST)
            chunks = list(client.chat.completions.create(model="deepseek", stream=True,
                                                         **REQUEST))
            usage = chunks[-1].usage
            assert usage is not None and chunks[-1].choices[0].finish_reason == "stop"
            assert answer.usage is not None
            assert (usage.prompt_tokens, usage.completion_tokens) == (
                answer.usage.prompt_tokens, answer.usage.completion_tokens)
            deadline = time.monotonic() + 10
            while len(written := records(gateway)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            streamed = [r for r in written if r.stream]
            assert len(streamed) == 1
            assert streamed[0].usage_source == "measured"
            assert (streamed[0].prompt_tokens, streamed[0].completion_tokens) == (
                usage.prompt_tokens, usage.completion_tokens)
