"""gpt-5-chat is the gpt-5 family's chat model, not a reasoning one: Azure takes its
`max_tokens`, `temperature` and `top_p` (and refuses a reasoning model's rules for it
nowhere), so the gateway sends them as the client wrote them. The gateway read every
`gpt-5*` name as a reasoning model and silently sent only `max_completion_tokens` (the
client's temperature dropped). gpt-5-mini stays a reasoning model. The official `openai`
SDK through the gateway to the emulator, whose gpt-5 deployments follow Azure's rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator import EmulatedDeployment, create_emulator_app
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config
from tests.support import ServerThread, serve

_DEPLOYMENTS = {"gpt-5-chat": "gpt-5-chat-2025-08-07", "gpt-5-mini": "gpt-5-mini-2025-08-07"}


@pytest.fixture
def azure() -> Iterator[Emulator]:
    base = emulator_config()
    added = tuple(EmulatedDeployment(name=name, model=model, kind="chat")
                  for name, model in _DEPLOYMENTS.items())
    config = dataclasses.replace(base, deployments=(*base.deployments, *added))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


@pytest.fixture
def client(azure: Emulator, start_gateway: Callable[..., ServerThread]) -> openai.OpenAI:
    gateway = start_gateway(load_settings({
        "client_keys": [CLIENT_KEY],
        "deployment_config": [
            {"model_name": name, "deployment_name": name, "endpoint": azure.url,
             "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
            for name in _DEPLOYMENTS],
    }, {}))
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)


def test_gpt5_chat_keeps_its_sampling_parameters_and_max_tokens(
    client: openai.OpenAI, azure: Emulator,
) -> None:
    reply = client.chat.completions.create(
        model="gpt-5-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=100,
        temperature=0.2, top_p=0.5)
    assert reply.choices[0].message.content
    sent: dict[str, Any] = azure.last()["json"]
    # on main: {"max_completion_tokens": 100}, temperature and top_p dropped
    assert (sent.get("max_tokens"), sent.get("temperature"), sent.get("top_p")) == (100, 0.2, 0.5), sent
    assert "max_completion_tokens" not in sent, sent


def test_gpt5_mini_is_still_a_reasoning_model(client: openai.OpenAI, azure: Emulator) -> None:
    reply = client.chat.completions.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=100,
        temperature=0.2)
    assert reply.choices[0].message.content
    sent = azure.last()["json"]
    assert sent.get("max_completion_tokens") == 100 and "max_tokens" not in sent, sent
    assert "temperature" not in sent, sent
