"""A pool of Azure OpenAI deployments on different api-versions given a request one member
refuses before Azure (a parameter or a route its explicit api-version does not serve):
the gateway passes that member over to one that serves it, as a Foundry member is passed
over (test_foundry_pools.py). The refusal is no upstream attempt (`max_attempts` counts
those), the ledger names the deployment that answered, and a pool whose members all
refuse gives the client the refusal, with nothing sent. Through the gateway with the
OpenAI SDK, on the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator
from tests.e2e.pools import FakeClock, chat_deployment, pool_emulator, pool_gateway, sdk
from tests.e2e.test_ledger import records
from tests.support import ServerThread

OLD, NEW, NEWER = "2024-02-01", "2025-04-01-preview", "2025-03-01-preview"
CHAT = "/openai/deployments/{}/chat/completions"
# json_schema needs 2024-08-01-preview (GA 2024-10-21): 2024-02-01 cannot take it.
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
    "additionalProperties": False}, "strict": True}}


def _member(url: str, name: str, version: str, priority: int) -> dict[str, Any]:
    return {"deployment_name": name, "endpoint": url, "api_key": AZURE_KEY,
            "api_version": version, "priority": priority}


@contextmanager
def _serving(tmp_path: Path, versions: tuple[str, ...], max_attempts: int = 3,
             **extra: Any) -> Iterator[tuple[Emulator, Any, ServerThread]]:
    """A pool `gpt-4o` of dep-1, dep-2... on `versions`, tried in that order (priority)."""
    names = [f"dep-{index}" for index in range(1, len(versions) + 1)]
    with pool_emulator(*(chat_deployment(name) for name in names)) as emulator:
        settings = load_settings({
            "models": {"gpt-4o": [_member(emulator.url, name, version, priority)
                                  for priority, (name, version)
                                  in enumerate(zip(names, versions, strict=True), 1)]},
            "client_keys": [CLIENT_KEY], "max_attempts": max_attempts,
            "database": f"sqlite:///{tmp_path / 'gw.db'}", **extra,
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            yield emulator, sdk(gateway), gateway


def _ask(client: Any, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **extra)


def _sent(emulator: Emulator) -> list[tuple[str, int]]:
    return [(r["path"], r["status"]) for r in emulator.requests()]


def test_a_parameter_the_old_member_refuses_is_served_by_the_newer_one(
        tmp_path: Path) -> None:
    with _serving(tmp_path, (OLD, NEW)) as (emulator, client, gateway):
        raw = _ask(client, response_format=SCHEMA)
        assert raw.parse().choices[0].message.content
        # never sent to dep-1 (the gateway refused it there): straight to dep-2
        assert _sent(emulator) == [(CHAT.format("dep-2"), 200)]
        assert emulator.last()["json"]["response_format"] == SCHEMA
        [record] = records(gateway)
        assert (record.deployment, record.status, record.attempts) == ("dep-2", 200, 1)
        assert record.prompt_tokens > 0 and record.cost_usd > 0
        # a request both take still goes to the first priority
        assert _ask(client).parse().choices[0].message.content
        assert emulator.last()["path"] == CHAT.format("dep-1")


def test_the_refusal_takes_no_attempt_from_the_members_that_serve_it(tmp_path: Path) -> None:
    # dep-2 fails with a 503: dep-3 is the request's second upstream attempt, and
    # max_attempts 2 lets it be made (dep-1's refusal sent nothing).
    with _serving(tmp_path, (OLD, NEW, NEWER), max_attempts=2) as (emulator, client, gateway):
        emulator.fault("dep-2", "503")
        assert _ask(client, response_format=SCHEMA).parse().choices[0].message.content
        assert _sent(emulator) == [(CHAT.format("dep-2"), 503), (CHAT.format("dep-3"), 200)]
        [record] = records(gateway)
        assert (record.deployment, record.attempts) == ("dep-3", 2)


def test_one_attempt_allowed_is_the_serving_members(tmp_path: Path) -> None:
    with _serving(tmp_path, (OLD, NEW), max_attempts=1) as (emulator, client, _):
        assert _ask(client, response_format=SCHEMA).parse().choices[0].message.content
        assert _sent(emulator) == [(CHAT.format("dep-2"), 200)]


def test_members_that_all_refuse_give_the_client_the_refusal(tmp_path: Path) -> None:
    with _serving(tmp_path, (OLD, "2024-06-01")) as (emulator, client, gateway):
        with pytest.raises(openai.BadRequestError) as caught:
            _ask(client, response_format=SCHEMA)
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["param"], error["code"]) == ("response_format", "unsupported_parameter")
        assert "2024-02-01" in error["message"]  # the first refusal: dep-1's
        assert emulator.requests() == []
        [record] = records(gateway)
        assert (record.deployment, record.status) == ("dep-1", 400)


def test_a_route_the_old_member_does_not_serve_goes_to_the_newer_one(
        tmp_path: Path) -> None:
    # An Azure SDK client's Responses call on its own api-version, not honoured: the
    # gateway sends each member's version, and dep-1's (a GA) serves no Responses API.
    with _serving(tmp_path, (OLD, NEW), honour_client_api_version=False) as (
            emulator, _, gateway):
        azure = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key=CLIENT_KEY,
                                   api_version=OLD, max_retries=0, timeout=30)
        answer = azure.responses.create(model="gpt-4o", input="hi")
        assert answer.output_text
        [(path, status)] = _sent(emulator)
        assert (path, status) == ("/openai/responses", 200)
        assert emulator.last()["query_params"]["api-version"] == [NEW]
        [record] = records(gateway)
        assert (record.deployment, record.status, record.attempts) == ("dep-2", 200, 1)


def test_a_reasoning_model_the_old_member_cannot_serve_goes_to_the_newer_one(
        tmp_path: Path) -> None:
    # o3-mini needs 2024-12-01-preview: the gateway refuses its chat on 2024-10-21.
    deployments = (EmulatedDeployment("o3-old", "o3-mini", "chat", rpm=60_000),
                   EmulatedDeployment("o3-new", "o3-mini", "chat", rpm=60_000))
    with pool_emulator(*deployments) as emulator:
        settings = load_settings({
            "models": {"o3-mini": [_member(emulator.url, "o3-old", "2024-10-21", 1),
                                   _member(emulator.url, "o3-new", NEW, 2)]},
            "client_keys": [CLIENT_KEY], "database": f"sqlite:///{tmp_path / 'gw.db'}",
        }, {})
        with pool_gateway(settings, FakeClock()) as gateway:
            answer = sdk(gateway).chat.completions.create(
                model="o3-mini", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content
            assert _sent(emulator) == [(CHAT.format("o3-new"), 200)]
            [record] = records(gateway)
            assert (record.deployment, record.status, record.attempts) == ("o3-new", 200, 1)


def test_a_native_clients_own_old_version_is_refused_alike_by_every_member(
        tmp_path: Path) -> None:
    # The Azure SDK's api-version, honoured, is what every dated member is sent: the
    # newer member's own version does not serve it, so the refusal is the client's at once.
    with _serving(tmp_path, (OLD, NEW)) as (emulator, _, gateway):
        azure = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key=CLIENT_KEY,
                                   api_version=OLD, max_retries=0, timeout=30)
        with pytest.raises(openai.BadRequestError) as caught:
            azure.chat.completions.create(model="gpt-4o", response_format=SCHEMA,
                                          messages=[{"role": "user", "content": "hi"}])
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == "response_format"
        assert OLD in error["message"]
        assert emulator.requests() == []
        [record] = records(gateway)
        assert (record.deployment, record.status) == ("dep-1", 400)


def test_a_refused_route_names_no_deployment(tmp_path: Path) -> None:
    # Both members' explicit versions are too old for the Responses API: each is refused
    # (the second after the first is passed over), and the client's 400 says which
    # version it needs without naming a deployment (the operator's, never the client's).
    with _serving(tmp_path, (OLD, "2024-06-01")) as (emulator, client, gateway):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="gpt-4o", input="hi")
        error = caught.value
        assert error.code == "unsupported_api_version"
        assert "The Responses API needs api-version 2025-03-01-preview" in error.message
        assert OLD in error.message  # the first refusal's (dep-1's) version
        assert "dep-" not in str(error.body) and AZURE_KEY not in str(error.body)
        assert emulator.requests() == []
        [record] = records(gateway)
        assert (record.deployment, record.status) == ("dep-1", 400)


def test_a_native_clients_refusal_does_not_wait_for_a_member_that_would_refuse_alike(
        tmp_path: Path) -> None:
    # dep-2 is cooling down (an hour): a native client's own version, which dep-2 would
    # be sent too, is refused at once, not passed over to it (the pool's 429 instead).
    with _serving(tmp_path, (OLD, NEW)) as (emulator, client, gateway):
        emulator.fault("dep-2", "429", retry_after=3600)
        with pytest.raises(openai.RateLimitError):  # dep-1 passed over, dep-2's 429
            _ask(client, response_format=SCHEMA)
        azure = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key=CLIENT_KEY,
                                   api_version=OLD, max_retries=0, timeout=30)
        with pytest.raises(openai.BadRequestError) as caught:
            azure.chat.completions.create(model="gpt-4o", response_format=SCHEMA,
                                          messages=[{"role": "user", "content": "hi"}])
        assert caught.value.code == "unsupported_parameter"
        assert _sent(emulator) == [(CHAT.format("dep-2"), 429)]  # the first request's
