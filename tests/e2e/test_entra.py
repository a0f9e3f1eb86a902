"""`auth: entra` end to end: the gateway's Bearer token reaches the emulator, no api-key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from openai import APIStatusError

from azure_openai_proxy.emulator import mask_secret
from tests.e2e.pools import chat, chat_deployment, hits, pool_emulator, pool_gateway, pool_settings, sdk


@dataclass
class AccessToken:
    token: str
    expires_on: int


class FakeCredential:
    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0

    async def get_token(self, *scopes: str) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, 4_102_444_800)  # year 2100

    async def close(self) -> None:
        pass


def test_entra_token_reaches_azure_as_bearer_and_no_api_key_is_sent() -> None:
    credential = FakeCredential("the-token")
    with pool_emulator(chat_deployment("dep-a"), entra_tokens=("the-token",)) as emulator:
        settings = pool_settings(emulator.url, [("dep-a", {"auth": "entra", "api_key": None})])
        with pool_gateway(settings, credential=credential) as gateway:
            client = sdk(gateway)
            assert chat(client).choices[0].message.content
            chat(client)
        assert hits(emulator) == [("dep-a", 200), ("dep-a", 200)]
        headers = emulator.last()["headers"]
        assert headers["authorization"] == mask_secret("Bearer the-token")
        assert "api-key" not in headers
        assert credential.calls == 1  # cached


def test_a_wrong_entra_token_is_the_gateways_fault_not_the_clients() -> None:
    credential = FakeCredential("not-the-token")
    with pool_emulator(chat_deployment("dep-a"), entra_tokens=("the-token",)) as emulator:
        settings = pool_settings(emulator.url, [("dep-a", {"auth": "entra", "api_key": None})])
        with pool_gateway(settings, credential=credential) as gateway, \
                pytest.raises(APIStatusError) as caught:
            chat(sdk(gateway))
        assert caught.value.status_code == 502
        assert caught.value.response.json()["error"]["code"] == "upstream_authentication_failed"
