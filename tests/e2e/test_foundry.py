"""Foundry model deployments (`api: foundry`, Azure AI model inference) pooled with Azure
OpenAI ones behind one model name: the plain OpenAI SDK through the gateway, against the
emulator serving both URL families. What reached "Azure" is read from the emulator's
request log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.runtime.runner import describe
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk
from tests.support import ServerThread, load_keys_now
from tests.waiting import until

CHAT_MODEL = "llama"
EMBED_MODEL = "embedder"
FOUNDRY_ONLY = "deepseek"
DEPLOYMENTS = (
    EmulatedDeployment("Llama-3-70B", "Llama-3-70B-Instruct", "chat", rpm=60_000),
    EmulatedDeployment("gpt-4o", "gpt-4o-2024-08-06", "chat", rpm=60_000),
    EmulatedDeployment("DeepSeek-R1", "DeepSeek-R1", "chat", rpm=60_000),
    EmulatedDeployment("embed-foundry", "text-embedding-3-small", "embeddings", rpm=60_000),
    EmulatedDeployment("embed-aoai", "text-embedding-3-small", "embeddings", rpm=60_000),
)


def _settings(url: str, foundry_first: bool = True) -> Settings:
    first, second = (1, 2) if foundry_first else (2, 1)
    foundry = {"endpoint": url, "api_key": AZURE_KEY, "api": "foundry"}
    azure = {"endpoint": url, "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
    return load_settings({
        "models": {
            CHAT_MODEL: [{"deployment_name": "Llama-3-70B", "priority": first, **foundry},
                         {"deployment_name": "gpt-4o", "priority": second, **azure}],
            EMBED_MODEL: [{"deployment_name": "embed-foundry", "priority": first, **foundry},
                          {"deployment_name": "embed-aoai", "priority": second, **azure}],
            FOUNDRY_ONLY: [{"deployment_name": "DeepSeek-R1", **foundry}],
        },
        "client_keys": [CLIENT_KEY],
    }, {})


@contextmanager
def _serving(foundry_first: bool = True) -> Iterator[tuple[Emulator, ServerThread, Any]]:
    with pool_emulator(*DEPLOYMENTS) as emulator, pool_gateway(
        _settings(emulator.url, foundry_first), FakeClock()
    ) as gateway:
        yield emulator, gateway, sdk(gateway)


def _hits(emulator: Emulator, since: int = 0) -> list[tuple[str, str | None, int | None]]:
    return [(r["path"], r["deployment"], r["status"]) for r in emulator.requests()[since:]]


def _chat(client: Any, model: str = CHAT_MODEL, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], **extra)


def test_chat_on_the_foundry_member_goes_to_the_model_inference_url() -> None:
    with _serving() as (emulator, _, client):
        answer = _chat(client)
        assert answer.choices[0].message.content
        assert answer.model == CHAT_MODEL  # the client's name, as for Azure OpenAI
        sent = emulator.last()
        assert sent["path"] == "/models/chat/completions"
        assert sent["query_params"] == {"api-version": ["2024-05-01-preview"]}
        assert sent["json"]["model"] == "Llama-3-70B"  # the deployment, not the client's name
        assert "authorization" not in sent["headers"]  # the server's key, as api-key
        assert sent["headers"]["api-key"].startswith("sha256:")


def test_a_streamed_chat_through_a_foundry_deployment_is_normalized() -> None:
    with _serving() as (emulator, _, client):
        chunks = list(_chat(client, stream=True))
        assert emulator.last()["path"] == "/models/chat/completions"
        assert emulator.last()["json"]["stream"] is True
        # No empty-choices filter frame reaches the client; every chunk names its model.
        assert chunks and all(chunk.choices for chunk in chunks)
        assert {chunk.model for chunk in chunks} == {CHAT_MODEL}
        assert len({chunk.id for chunk in chunks}) == 1
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        assert text
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_on_the_foundry_member() -> None:
    with _serving() as (emulator, _, client):
        vectors = client.embeddings.create(model=EMBED_MODEL, input=["one", "two"])
        assert [item.index for item in vectors.data] == [0, 1]
        sent = emulator.last()
        assert (sent["path"], sent["json"]["model"]) == ("/models/embeddings", "embed-foundry")


@pytest.mark.parametrize("foundry_first", [True, False])
def test_a_429_fails_over_between_foundry_and_azure_openai(foundry_first: bool) -> None:
    with _serving(foundry_first) as (emulator, _, client):
        primary, backup = ("Llama-3-70B", "gpt-4o") if foundry_first else ("gpt-4o", "Llama-3-70B")
        paths = {"Llama-3-70B": "/models/chat/completions",
                 "gpt-4o": "/openai/deployments/gpt-4o/chat/completions"}
        emulator.fault(primary, "429", retry_after=30)
        assert _chat(client).choices[0].message.content
        assert _hits(emulator) == [(paths[primary], primary, 429), (paths[backup], backup, 200)]
        chunks = list(_chat(client, stream=True))  # the primary rests: straight to the backup
        assert "".join(c.choices[0].delta.content or "" for c in chunks)
        assert _hits(emulator, 2) == [(paths[backup], backup, 200)]


def test_embeddings_fail_over_from_foundry_to_azure_openai() -> None:
    with _serving() as (emulator, _, client):
        emulator.fault("embed-foundry", "429", retry_after=30)
        assert client.embeddings.create(model=EMBED_MODEL, input="x").data
        assert _hits(emulator) == [("/models/embeddings", "embed-foundry", 429),
                                   ("/openai/deployments/embed-aoai/embeddings", "embed-aoai", 200)]


def test_what_foundry_cannot_serve_goes_to_the_azure_member_or_is_refused() -> None:
    with _serving() as (emulator, _, client):
        # A Responses call for the mixed pool skips its Foundry member.
        client.responses.create(model=CHAT_MODEL, input="hi")
        assert _hits(emulator)[-1][:2] == ("/openai/responses", "gpt-4o")
        seen = len(emulator.requests())
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model=FOUNDRY_ONLY, prompt="a cat")
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "operation_not_supported"
        assert "images/generations" in error["message"] and FOUNDRY_ONLY in error["message"]
        assert len(emulator.requests()) == seen  # nothing was sent


def test_models_lists_foundry_pools_and_check_config_names_the_family() -> None:
    with _serving() as (emulator, _, client):
        names = {model.id for model in client.models.list()}
        assert {CHAT_MODEL, EMBED_MODEL, FOUNDRY_ONLY} <= names
        assert client.models.retrieve(FOUNDRY_ONLY).id == FOUNDRY_ONLY
        table = describe(_settings(emulator.url))
        row = next(line for line in table.splitlines() if "DeepSeek-R1" in line)
        assert "foundry" in row.split() and "2024-05-01-preview" in row.split()
        assert AZURE_KEY not in table


def test_a_native_azure_clients_api_version_is_not_passed_to_foundry() -> None:
    with _serving() as (emulator, gateway, _):
        client = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key=CLIENT_KEY, max_retries=0,
                             api_version="2025-04-01-preview")
        answer = client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hello"}])
        assert answer.choices[0].message.content
        sent = emulator.last()
        assert sent["path"] == "/models/chat/completions"
        assert sent["query_params"] == {"api-version": ["2024-05-01-preview"]}


def test_an_object_goes_back_to_its_azure_deployment_never_to_a_foundry_twin() -> None:
    # One resource serves a deployment on both families; an object it created (a
    # response) is followed up on its Azure OpenAI path, whatever model the call names:
    # the named model's Azure deployment on that resource, else the one that made it.
    with pool_emulator(*DEPLOYMENTS) as emulator:
        foundry = {"endpoint": emulator.url, "api_key": AZURE_KEY, "api": "foundry"}
        azure = {"endpoint": emulator.url, "api_key": AZURE_KEY,
                 "api_version": "2025-04-01-preview"}
        settings = load_settings({"models": {
            "twin": [{"deployment_name": "gpt-4o", **foundry}],
            "gpt-4o": [{"deployment_name": "gpt-4o", **azure}],
            "other": [{"deployment_name": "Llama-3-70B", **azure}],
        }, "client_keys": [CLIENT_KEY]}, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            client = sdk(gateway)
            first = client.responses.create(model="gpt-4o", input="hi")
            client.responses.create(model="other", input="and then?",
                                    previous_response_id=first.id)
            assert [r["path"] for r in emulator.requests()] == ["/openai/responses"] * 2
            assert emulator.last()["deployment"] == "Llama-3-70B"


def test_a_virtual_key_is_governed_on_a_foundry_pool(tmp_path: Path) -> None:
    with pool_emulator(*DEPLOYMENTS) as emulator:
        database = tmp_path / "gateway.db"
        raw = _settings(emulator.url).model_dump()
        settings = Settings.model_validate(
            {**raw, "database": f"sqlite://{database}", "admin_key": "admin-key-0123456789"})
        with pool_gateway(settings, FakeClock()) as gateway:
            store = KeyStore.open(database)
            try:
                _, secret = store.create_key("llama-only", models=(CHAT_MODEL,),
                                             limits=Limits(rpm=3), now=time.time())
            finally:
                store.close()
            load_keys_now(gateway)  # not the next poll's (up to 0.5 s a key)
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0)
            until(lambda: _models_status(gateway.url, secret) == 200, timeout=10,
                  message="the gateway never loaded the new key")
            assert _chat(client).choices[0].message.content
            assert emulator.last()["path"] == "/models/chat/completions"
            with pytest.raises(openai.NotFoundError):
                _chat(client, FOUNDRY_ONLY)  # not on the key's allow-list
            with pytest.raises(openai.RateLimitError):
                _chat(client)  # its RPM of 3: the /v1/models answer that found the key, two chats
                _chat(client)
            assert [r["path"] for r in emulator.requests()] == ["/models/chat/completions"] * 2


def _models_status(url: str, secret: str) -> int:
    return httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code
