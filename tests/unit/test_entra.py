"""Entra ID tokens with a fake credential: caching, early refresh, one refresh at a time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.upstream.entra import EntraTokens, EntraUnavailable, missing_entra_support

SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass
class AccessToken:
    token: str
    expires_on: int


class FakeCredential:
    def __init__(self, lifetime: int = 3600) -> None:
        self.calls: list[str] = []
        self.lifetime = lifetime
        self.now = 0.0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def get_token(self, *scopes: str) -> AccessToken:
        self.calls.append(scopes[0])
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("no identity here")
        return AccessToken(f"token-{len(self.calls)}", int(self.now) + self.lifetime)


class Clock:
    def __init__(self, credential: FakeCredential) -> None:
        self.credential = credential

    def __call__(self) -> float:
        return self.credential.now


async def settle() -> None:
    """Let a refresh started beside a request run to its end."""
    for _ in range(10):
        await asyncio.sleep(0)


def tokens(credential: FakeCredential) -> EntraTokens:
    return EntraTokens(credential, clock=Clock(credential), refresh_margin=300)


async def test_tokens_are_cached_per_scope() -> None:
    credential = FakeCredential()
    cache = tokens(credential)
    assert await cache.token(SCOPE) == "token-1"
    assert await cache.token(SCOPE) == "token-1"
    assert await cache.token("https://cognitiveservices.azure.us/.default") == "token-2"
    assert credential.calls == [SCOPE, "https://cognitiveservices.azure.us/.default"]


async def test_refreshed_five_minutes_before_expiry() -> None:
    credential = FakeCredential(lifetime=3600)
    cache = tokens(credential)
    await cache.token(SCOPE)
    credential.now = 3299.0
    assert await cache.token(SCOPE) == "token-1"
    credential.now = 3300.0
    assert await cache.token(SCOPE) == "token-1"  # still valid: refreshed beside the request
    await settle()
    assert await cache.token(SCOPE) == "token-2"


async def test_concurrent_requests_share_one_refresh() -> None:
    credential = FakeCredential()
    credential.gate = asyncio.Event()
    cache = tokens(credential)
    waiters = [asyncio.create_task(cache.token(SCOPE)) for _ in range(20)]
    await asyncio.sleep(0)
    credential.gate.set()
    assert set(await asyncio.gather(*waiters)) == {"token-1"}
    assert len(credential.calls) == 1


async def test_a_waiter_that_leaves_does_not_cancel_the_refresh() -> None:
    credential = FakeCredential()
    credential.gate = asyncio.Event()
    cache = tokens(credential)
    leaving = asyncio.create_task(cache.token(SCOPE))
    staying = asyncio.create_task(cache.token(SCOPE))
    await asyncio.sleep(0)
    leaving.cancel()
    credential.gate.set()
    assert await staying == "token-1"
    assert len(credential.calls) == 1


async def test_a_failed_refresh_uses_the_still_valid_token_else_raises() -> None:
    credential = FakeCredential(lifetime=3600)
    cache = tokens(credential)
    await cache.token(SCOPE)
    credential.now, credential.fail = 3400.0, True
    assert await cache.token(SCOPE) == "token-1"  # inside the margin, still valid
    credential.now = 3700.0
    with pytest.raises(EntraUnavailable) as caught:
        await cache.token(SCOPE)
    assert "no identity here" not in caught.value.message
    assert caught.value.http_status == 502


async def test_token_for_uses_the_deployments_scope() -> None:
    credential = FakeCredential()
    deployment = DeploymentSettings(model_name="m", deployment_name="d", endpoint="https://x.example.com",
                                    auth="entra", entra_scope="https://cognitiveservices.azure.us/.default")
    await tokens(credential).token_for(deployment)
    assert credential.calls == ["https://cognitiveservices.azure.us/.default"]


def test_auth_entra_without_azure_identity_is_a_clear_config_error() -> None:
    settings = load_settings({"deployment_config": [
        {"model_name": "m", "deployment_name": "d", "endpoint": "https://x.example.com", "auth": "entra"}
    ]}, {})
    message = missing_entra_support(settings, installed=lambda: False)
    assert message is not None and "pip install 'azure-openai-proxy[entra]'" in message
    assert missing_entra_support(settings, installed=lambda: True) is None


async def test_a_refresh_inside_the_margin_does_not_hold_requests_up() -> None:
    # The last five minutes of a token: a request used to wait for the refresh it
    # started, however long the credential took (a DefaultAzureCredential probing its
    # sources while IMDS is slow), though the cached token was still good.
    credential = FakeCredential(lifetime=3600)
    cache = tokens(credential)
    await cache.token(SCOPE)
    credential.now, credential.gate = 3400.0, asyncio.Event()
    assert await asyncio.wait_for(cache.token(SCOPE), 1) == "token-1"
    assert await asyncio.wait_for(cache.token(SCOPE), 1) == "token-1"
    assert len(credential.calls) == 2  # one refresh, under way
    credential.gate.set()
    await settle()
    assert await cache.token(SCOPE) == "token-2"
    assert len(credential.calls) == 2


async def test_after_a_failed_refresh_none_is_tried_for_a_while() -> None:
    credential = FakeCredential(lifetime=3600)
    credential.fail = True
    cache = tokens(credential)  # no refresh for 10 s (the default) after one failed
    for _ in range(5):
        with pytest.raises(EntraUnavailable) as caught:
            await cache.token(SCOPE)
        assert caught.value.http_status == 502 and "no identity here" not in caught.value.message
    assert len(credential.calls) == 1  # not one identity probe per request
    credential.now, credential.fail = 10.0, False
    assert await cache.token(SCOPE) == "token-2"


async def test_a_failed_background_refresh_serves_the_valid_token_then_retries() -> None:
    credential = FakeCredential(lifetime=3600)
    cache = tokens(credential)  # no refresh for 10 s (the default) after one failed
    await cache.token(SCOPE)
    credential.now, credential.fail = 3400.0, True
    assert await cache.token(SCOPE) == "token-1"
    await settle()
    assert await cache.token(SCOPE) == "token-1"
    assert len(credential.calls) == 2
    credential.now, credential.fail = 3410.0, False
    assert await cache.token(SCOPE) == "token-1"  # refreshing again, beside it
    await settle()
    assert await cache.token(SCOPE) == "token-3"


async def test_a_credential_that_never_answers_is_a_502_not_a_hang(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from azure_openai_proxy.upstream import entra

    monkeypatch.setattr(entra, "TOKEN_TIMEOUT", 0.05, raising=False)
    credential = FakeCredential()
    credential.gate = asyncio.Event()  # never set: IMDS dropping packets
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"), \
            pytest.raises(EntraUnavailable) as caught:
        await asyncio.wait_for(tokens(credential).token(SCOPE), 5)
    assert caught.value.http_status == 502 and "TimeoutError" in caught.value.message
    # The log said 'TimeoutError: ' and nothing more.
    assert [r.getMessage() for r in caplog.records] == [
        f"Entra ID: no token for {SCOPE}: TimeoutError: no answer within 0.05 s"]


async def test_why_a_refresh_failed_is_logged_once_per_failure(
        caplog: pytest.LogCaptureFixture) -> None:
    # The client's 502 names only the exception's type; azure-identity's message, which
    # says which sources it tried and why each failed, went nowhere.
    credential = FakeCredential()
    credential.fail = True
    cache = tokens(credential)
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        for _ in range(3):
            with pytest.raises(EntraUnavailable):
                await cache.token(SCOPE)
    assert [r.getMessage() for r in caplog.records] == [
        f"Entra ID: no token for {SCOPE}: RuntimeError: no identity here"]


async def test_a_token_shorter_lived_than_the_margin_is_refreshed_at_half_its_life() -> None:
    # A four-minute token (under the five-minute margin) was due for refresh from the
    # moment it came: every request started a get_token.
    credential = FakeCredential(lifetime=240)
    cache = tokens(credential)
    assert await cache.token(SCOPE) == "token-1"
    for now in (10.0, 60.0, 119.0):
        credential.now = now
        assert await cache.token(SCOPE) == "token-1"
        await settle()
    assert len(credential.calls) == 1
    credential.now = 120.0
    assert await cache.token(SCOPE) == "token-1"  # refreshed beside the request
    await settle()
    assert await cache.token(SCOPE) == "token-2"


async def test_close_ends_a_refresh_under_way_beside_the_requests(
        caplog: pytest.LogCaptureFixture) -> None:
    # A refresh no request waits for outlived close(): the worker's loop ended with it
    # pending ("Task was destroyed but it is pending!"), or it failed on the closed
    # credential and logged a failed refresh at every shutdown.
    credential = FakeCredential(lifetime=3600)
    cache = tokens(credential)
    await cache.token(SCOPE)
    credential.now, credential.gate = 3400.0, asyncio.Event()  # never answers
    assert await cache.token(SCOPE) == "token-1"
    await settle()
    assert len(credential.calls) == 2  # the refresh is under way
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        await asyncio.wait_for(cache.close(), 1)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert caplog.records == []
