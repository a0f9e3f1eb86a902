"""A pool of a Foundry deployment and an Azure OpenAI one (the README's `llama` example)
given a request only one of them can take: OpenAI parameters the model inference API
does not define (`logprobs`, `n` past 1...) are refused for the Foundry member before
Azure, and the pool's other member serves them; the Foundry member alone refuses them
with a 400 naming the parameter. Through the gateway with the OpenAI SDK, against the
emulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk

DEPLOYMENTS = (
    EmulatedDeployment("Llama-3-70B", "Llama-3-70B-Instruct", "chat", rpm=60_000),
    EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat", rpm=60_000),
)
FOUNDRY_PATH = "/models/chat/completions"
AZURE_PATH = "/openai/deployments/gpt-4o/chat/completions"


@contextmanager
def _serving(foundry_priority: int) -> Iterator[tuple[Emulator, Any]]:
    with pool_emulator(*DEPLOYMENTS) as emulator:
        settings = load_settings({
            "models": {
                "llama": [
                    {"deployment_name": "Llama-3-70B", "api": "foundry",
                     "priority": foundry_priority, "endpoint": emulator.url,
                     "api_key": AZURE_KEY},
                    {"deployment_name": "gpt-4o", "priority": 2, "endpoint": emulator.url,
                     "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"},
                ],
                "llama-alone": [{"deployment_name": "Llama-3-70B", "api": "foundry",
                                 "endpoint": emulator.url, "api_key": AZURE_KEY}],
            },
            "client_keys": [CLIENT_KEY],
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            yield emulator, sdk(gateway)


def _chat(client: Any, model: str = "llama", **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}], **extra)


@pytest.mark.parametrize(("param", "value"), [("logprobs", True), ("n", 2)])
def test_the_azure_member_serves_what_the_foundry_one_cannot_take(param: str,
                                                                  value: Any) -> None:
    with _serving(foundry_priority=1) as (emulator, client):
        raw = _chat(client, **{param: value})
        assert raw.parse().choices[0].message.content
        # never sent to Foundry: straight to the member that takes it
        assert [(r["path"], r["status"]) for r in emulator.requests()] == [(AZURE_PATH, 200)]
        assert emulator.last()["json"][param] == value
        # a request both can take still goes to the first priority
        assert _chat(client).parse().choices[0].message.content
        assert emulator.last()["path"] == FOUNDRY_PATH


def test_a_429_on_the_azure_member_stays_a_429_when_the_foundry_one_cannot_take_it() -> None:
    with _serving(foundry_priority=3) as (emulator, client):
        # (a wait past the request's deadline: the gateway does not wait it out)
        emulator.fault("gpt-4o", "429", retry_after=86_400)
        with pytest.raises(openai.RateLimitError):
            _chat(client, logprobs=True)
        assert [(r["path"], r["status"]) for r in emulator.requests()] == [(AZURE_PATH, 429)]


def test_an_azure_members_failure_is_not_hidden_by_the_foundry_ones_refusal() -> None:
    with _serving(foundry_priority=3) as (emulator, client):
        emulator.fault("gpt-4o", "503")
        with pytest.raises(openai.InternalServerError) as caught:
            _chat(client, logprobs=True)
        assert caught.value.status_code == 503
        assert [(r["path"], r["status"]) for r in emulator.requests()] == [(AZURE_PATH, 503)]


@pytest.mark.parametrize("why", ["429", "refused"])
def test_the_adaptations_named_are_those_of_the_member_that_answered(why: str) -> None:
    # The Foundry member's body had max_completion_tokens renamed (its api-version takes
    # max_tokens); the Azure OpenAI member's kept it: the client is told of no rename.
    with _serving(foundry_priority=1) as (emulator, client):
        extra: dict[str, Any] = {"max_completion_tokens": 50}
        if why == "429":
            emulator.fault("Llama-3-70B", "429", retry_after=30)
        else:
            extra["logprobs"] = True
        raw = _chat(client, **extra)
        assert raw.parse().choices[0].message.content
        sent = emulator.last()
        assert (sent["path"], sent["json"]["max_completion_tokens"]) == (AZURE_PATH, 50)
        assert "x-proxy-adapted" not in raw.headers


def test_the_foundry_member_alone_refuses_it_naming_the_parameter() -> None:
    with _serving(foundry_priority=1) as (emulator, client):
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(client, "llama-alone", logprobs=True)
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["param"], error["code"]) == ("logprobs", "unsupported_parameter")
        assert emulator.requests() == []
