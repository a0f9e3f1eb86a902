"""Azure's gpt-5 family pads each streamed chat chunk with an `obfuscation` member
(meilisearch#6341; emulated since session 23), unless the client sends
`stream_options.include_obfuscation: false`. Through the gateway: the padding and the
client's choice pass as they are, and the text is whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, MODELS, Emulator, emulator_with
from tests.support import ServerThread, serve

ASK = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture
def pair() -> Iterator[tuple[Emulator, ServerThread]]:
    with emulator_with(EmulatedDeployment("gpt-5-mini", "gpt-5-mini-2025-08-07", "chat")) as emu:
        deployments = [{"model_name": m, "deployment_name": d, "endpoint": emu.url,
                        "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
                       for m, d in {**MODELS, "gpt-5-mini": "gpt-5-mini"}.items()]
        settings = load_settings({"deployment_config": deployments, "client_keys": [CLIENT_KEY]}, {})
        with serve(lambda: create_app(settings)) as gateway:
            yield emu, gateway


def _post(gateway: ServerThread, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"})


def _chunks(reply: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in reply.text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_padded_chunks_pass_the_gateway_whole(pair: tuple[Emulator, ServerThread]) -> None:
    _, gateway = pair
    answer = _post(gateway, ASK).json()["choices"][0]["message"]["content"]
    chunks = _chunks(_post(gateway, {**ASK, "stream": True}))
    with_choices = [c for c in chunks if c["choices"]]
    assert len(with_choices) >= 3
    assert all(isinstance(c.get("obfuscation"), str) and c["obfuscation"] for c in with_choices)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices) == answer


def test_include_obfuscation_false_reaches_azure_and_no_chunk_is_padded(
    pair: tuple[Emulator, ServerThread],
) -> None:
    emulator, gateway = pair
    chunks = _chunks(_post(gateway, {**ASK, "stream": True,
                                     "stream_options": {"include_obfuscation": False}}))
    assert chunks and not any("obfuscation" in c for c in chunks)
    sent = emulator.last()["json"]
    assert sent["stream_options"]["include_obfuscation"] is False
