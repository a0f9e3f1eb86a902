"""Structured outputs (`response_format: json_schema`) on a Foundry deployment: Azure AI
model inference takes them on its own api-version, 2024-05-01-preview (Microsoft's
structured-outputs how-to for Foundry Models sends them there), although Azure OpenAI's
dated API first takes them on 2024-08-01-preview. Through the gateway with the OpenAI
SDK's `parse`, against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk

DEPLOYMENTS = (
    EmulatedDeployment("Cohere-command-r-plus", "Cohere-command-r-plus-08-2024", "chat",
                       rpm=60_000),
    EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat", rpm=60_000),
)
SCHEMA = {"type": "json_schema", "json_schema": {
    "name": "issue", "strict": True,
    "schema": {"type": "object", "properties": {"title": {"type": "string"}},
               "required": ["title"], "additionalProperties": False}}}


class Issue(BaseModel):
    title: str


@contextmanager
def _serving() -> Iterator[tuple[Emulator, Any]]:
    with pool_emulator(*DEPLOYMENTS) as emulator:
        foundry = {"endpoint": emulator.url, "api_key": AZURE_KEY, "api": "foundry"}
        settings = load_settings({
            "models": {
                "cohere": [{"deployment_name": "Cohere-command-r-plus", **foundry}],
                # the same API family on an Azure OpenAI version the client names
                "cohere-dated": [{"deployment_name": "Cohere-command-r-plus", **foundry,
                                  "api_version": "2024-06-01"}],
                "gpt-old": [{"deployment_name": "gpt-4o", "endpoint": emulator.url,
                             "api_key": AZURE_KEY, "api_version": "2024-06-01"}],
            },
            "client_keys": [CLIENT_KEY],
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            yield emulator, sdk(gateway)


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Title this issue: the login page hangs"}]


def test_the_emulator_takes_a_schema_on_the_model_inference_version() -> None:
    with pool_emulator(*DEPLOYMENTS) as emulator:
        answer = httpx.post(
            emulator.url + "/models/chat/completions?api-version=2024-05-01-preview",
            headers={"api-key": AZURE_KEY},
            json={"model": "Cohere-command-r-plus", "messages": _messages(),
                  "response_format": SCHEMA})
        assert answer.status_code == 200, answer.text
        assert Issue.model_validate_json(answer.json()["choices"][0]["message"]["content"])


@pytest.mark.parametrize("stream", [False, True])
def test_a_schema_reaches_a_foundry_deployment(stream: bool) -> None:
    with _serving() as (emulator, client):
        if stream:
            with client.chat.completions.stream(model="cohere", messages=_messages(),
                                                response_format=Issue) as events:
                parsed = events.get_final_completion().choices[0].message.parsed
        else:
            parsed = client.chat.completions.parse(
                model="cohere", messages=_messages(), response_format=Issue,
            ).choices[0].message.parsed
        assert isinstance(parsed, Issue) and parsed.title
        sent = emulator.last()
        assert (sent["path"], sent["status"]) == ("/models/chat/completions", 200)
        assert sent["query"] == "api-version=2024-05-01-preview"
        assert sent["json"]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("model", ["gpt-old", "cohere-dated"])
def test_an_azure_openai_version_before_schemas_still_refuses_one(model: str) -> None:
    # The gate stays where the version is Azure OpenAI's: its 400 names the version needed.
    with _serving() as (emulator, client):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.parse(model=model, messages=_messages(),
                                          response_format=Issue)
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == "response_format"
        assert "2024-08-01-preview" in error["message"]
        assert emulator.requests() == []
