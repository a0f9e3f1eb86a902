"""What OpenAI clients send that Azure AI model inference (a Foundry deployment) refuses:
its API takes only the keys of its own schema unless the `extra-parameters` header says
otherwise. Through the gateway with the plain OpenAI SDK, against the emulator, which
refuses them as the service does (its `{"detail": "Extra parameters [...] are not
allowed ..."}` 400)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk
from tests.support import ServerThread

MODEL = "deepseek"
DEPLOYMENTS = (
    EmulatedDeployment("DeepSeek-R1", "DeepSeek-R1", "chat", rpm=60_000),
    EmulatedDeployment("embed-foundry", "text-embedding-3-small", "embeddings", rpm=60_000),
)


@contextmanager
def _serving() -> Iterator[tuple[Emulator, ServerThread, Any]]:
    with pool_emulator(*DEPLOYMENTS) as emulator:
        foundry = {"endpoint": emulator.url, "api_key": AZURE_KEY, "api": "foundry"}
        settings = load_settings({
            "models": {MODEL: [{"deployment_name": "DeepSeek-R1", **foundry}],
                       "embedder": [{"deployment_name": "embed-foundry", **foundry}]},
            "client_keys": [CLIENT_KEY],
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            yield emulator, gateway, sdk(gateway)


def _chat(client: Any, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], **extra)


def test_the_emulator_refuses_extra_parameters_as_foundry_does() -> None:
    with pool_emulator(*DEPLOYMENTS) as emulator:
        url = emulator.url + "/models/chat/completions?api-version=2024-05-01-preview"
        body = {"model": "DeepSeek-R1", "messages": [{"role": "user", "content": "hi"}],
                "user": "alice", "n": 1}
        refused = httpx.post(url, json=body, headers={"api-key": AZURE_KEY})
        assert refused.status_code == 400
        assert refused.json()["detail"].startswith("Extra parameters ['user', 'n'] are not allowed")
        dropped = httpx.post(url, json=body, headers={"api-key": AZURE_KEY,
                                                      "extra-parameters": "drop"})
        assert dropped.status_code == 200
        odd = httpx.post(url, json=body, headers={"api-key": AZURE_KEY,
                                                  "extra-parameters": "ignore"})
        assert odd.status_code == 400 and "EXTRA_PARAMETERS" in odd.json()["detail"]


def test_hints_an_sdk_sends_are_dropped_before_foundry() -> None:
    with _serving() as (emulator, _, client):
        raw = _chat(client, user="alice", n=1, logprobs=False)
        assert raw.parse().choices[0].message.content
        sent = emulator.last()
        assert sent["status"] == 200
        assert not {"user", "n", "logprobs"} & set(sent["json"])
        assert "dropped:user" in raw.headers["x-proxy-adapted"]
        vectors = client.embeddings.create(model="embedder", input="x", user="alice")
        assert vectors.data and "user" not in emulator.last()["json"]


@pytest.mark.parametrize(("param", "value"), [("n", 2), ("logprobs", True),
                                              ("logit_bias", {"50256": -100})])
def test_what_the_client_would_silently_lose_is_refused_naming_it(param: str, value: Any) -> None:
    with _serving() as (emulator, _, client):
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(client, **{param: value})
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["param"], error["code"]) == (param, "unsupported_parameter")
        assert "extra-parameters: pass-through" in error["message"]
        assert emulator.requests() == []  # never sent


def test_the_clients_extra_parameters_header_is_relayed() -> None:
    with _serving() as (emulator, _, client):
        raw = _chat(client, n=2, extra_body={"top_k": 5},
                    extra_headers={"extra-parameters": "pass-through"})
        assert raw.parse().choices
        sent = emulator.last()
        assert sent["status"] == 200
        assert sent["headers"]["extra-parameters"] == "pass-through"
        assert (sent["json"]["top_k"], sent["json"]["n"]) == (5, 2)
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(client, extra_headers={"extra-parameters": "ignore"})
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "extra-parameters"


def test_foundrys_own_refusal_names_the_parameter() -> None:
    # A key no OpenAI API defines goes as it came; Foundry's 400 reaches the client in
    # OpenAI's shape, naming it.
    with _serving() as (emulator, _, client):
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(client, extra_body={"top_k": 5})
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["param"], error["code"]) == ("top_k", "unknown_parameter")
        assert error["message"].startswith("Extra parameters ['top_k'] are not allowed")
        assert emulator.last()["status"] == 400
