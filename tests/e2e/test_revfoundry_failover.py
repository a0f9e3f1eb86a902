"""A pool of Foundry and Azure OpenAI deployments given a request the Foundry member
refuses before Azure (review of the foundry branch): passing a member over sends nothing,
so it is no upstream attempt (`max_attempts` counts those) and takes none from the
pool's Azure OpenAI members. Through the gateway with the OpenAI SDK, on the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY
from tests.e2e.pools import FakeClock, pool_emulator, pool_gateway, sdk

AZURE = "/openai/deployments/{}/chat/completions"
DEPLOYMENTS = (
    EmulatedDeployment("Llama-3-70B", "Llama-3-70B-Instruct", "chat", rpm=60_000),
    EmulatedDeployment("gpt-4o-east", "gpt-4o-2024-08-06", "chat", rpm=60_000),
    EmulatedDeployment("gpt-4o-west", "gpt-4o-2024-08-06", "chat", rpm=60_000),
)


def _settings(url: str, max_attempts: int) -> Any:
    common = {"endpoint": url, "api_key": AZURE_KEY}
    azure = {"api_version": "2025-04-01-preview", **common}
    return load_settings({"models": {"llama": [
        {"deployment_name": "Llama-3-70B", "api": "foundry", "priority": 1, **common},
        {"deployment_name": "gpt-4o-east", "priority": 2, **azure},
        {"deployment_name": "gpt-4o-west", "priority": 3, **azure},
    ]}, "client_keys": [CLIENT_KEY], "max_attempts": max_attempts}, {})


@contextmanager
def _serving(max_attempts: int) -> Iterator[tuple[Any, Any]]:
    with pool_emulator(*DEPLOYMENTS) as emulator, pool_gateway(
            _settings(emulator.url, max_attempts), FakeClock()) as gateway:
        yield emulator, sdk(gateway)


def _ask(client: Any) -> Any:
    return client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], logprobs=True)


def test_a_foundry_member_passed_over_takes_no_attempt_from_the_azure_ones() -> None:
    with _serving(max_attempts=2) as (emulator, client):
        # The first Azure OpenAI member fails: the second is the request's second
        # upstream attempt (the Foundry member's refusal sent nothing). On main the
        # refusal counted as one, and the client got the 503 with a member unasked.
        emulator.fault("gpt-4o-east", "503")
        assert _ask(client).choices[0].message.content
        assert [(r["path"], r["status"]) for r in emulator.requests()] == [
            (AZURE.format("gpt-4o-east"), 503), (AZURE.format("gpt-4o-west"), 200)]


def test_one_attempt_allowed_still_reaches_the_azure_member() -> None:
    # max_attempts 1 (no retries): the one upstream attempt is the Azure OpenAI member's,
    # not the client's 400 the README says it gets only from a pool without one.
    with _serving(max_attempts=1) as (emulator, client):
        assert _ask(client).choices[0].message.content
        assert [(r["path"], r["status"]) for r in emulator.requests()] == [
            (AZURE.format("gpt-4o-east"), 200)]
