"""A virtual key calling a passthrough deployment (no api_key in the
config: the caller's own Azure key is sent on): the gateway has no Azure key to send, and
a gateway key is not one. The caller did present a key, so the answer says what is wrong."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.e2e.test_virtual_keys import ADMIN_KEY, Governed
from tests.support import ServerThread

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gateway(tmp_path: Path, emulator: Emulator,
            start_gateway: Callable[[Settings], ServerThread]) -> Iterator[ServerThread]:
    database = tmp_path / "gateway.db"
    settings = load_settings({
        "deployment_config": [
            {"model_name": "gpt-4o", "deployment_name": "gpt-4o", "endpoint": emulator.url,
             "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"},
            # passthrough: the caller's own Azure key is sent on
            {"model_name": "gpt-4o-mini", "deployment_name": "gpt-4o-mini",
             "endpoint": emulator.url, "api_version": "2025-04-01-preview"},
        ],
        "database": f"sqlite://{database}", "admin_key": ADMIN_KEY,
    }, {})
    yield start_gateway(settings)


def _virtual_key(server: ServerThread, database: Path) -> str:
    store = KeyStore.open(database)
    try:
        return Governed(server, database, store).key("alice")[1]
    finally:
        store.close()


def test_a_gateway_key_on_a_passthrough_deployment_is_told_why(
        gateway: ServerThread, tmp_path: Path) -> None:
    # It was a 401 "You didn't provide an API key. This gateway passes your key to Azure
    # OpenAI": the caller had sent one (the gateway accepted it), and no key it could
    # send would ever do.
    key = _virtual_key(gateway, tmp_path / "gateway.db")
    client = OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "azure_key_required"
    assert "gpt-4o-mini" in body["message"] and "virtual key" in body["message"]
    assert "didn't provide" not in body["message"] and key not in body["message"]
