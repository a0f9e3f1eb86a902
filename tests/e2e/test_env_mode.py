"""The Go tool's env mode: only AZURE_OPENAI_ENDPOINT (and maybe AZURE_OPENAI_API_KEY) set.

Resource calls that name no model (files, batches) go to the default endpoint; without
a default endpoint and with no deployment at all, they get a clear 4xx, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, MASKED_AZURE_KEY, Emulator
from tests.support import ServerThread


def _env_mode(emulator: Emulator, **env: str) -> Settings:
    environ = {"AZURE_OPENAI_ENDPOINT": emulator.url, "AZURE_OPENAI_API_KEY": AZURE_KEY, **env}
    return load_settings(None, environ, {"allow_open": True})


def _client(gateway: ServerThread, key: str = "unused") -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_files_and_batches_in_env_mode(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    client = _client(start_gateway(_env_mode(emulator)))
    line = b'{"custom_id": "1", "method": "POST", "url": "/chat/completions", "body": {}}\n'
    uploaded = client.files.create(file=("batch.jsonl", line, "application/jsonl"), purpose="batch")
    entry = emulator.last()
    assert entry["path"] == "/openai/files"
    assert {k.lower(): v for k, v in entry["headers"].items()}["api-key"] == MASKED_AZURE_KEY
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert emulator.last()["path"] == f"/openai/files/{uploaded.id}"
    assert any(f.id == uploaded.id for f in client.files.list())
    assert isinstance(list(client.batches.list()), list)
    assert emulator.last()["path"] == "/openai/batches"


def test_env_mode_passthrough_key(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    # No AZURE_OPENAI_API_KEY: the client's own key is passed on as api-key.
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url})
    client = _client(start_gateway(settings), AZURE_KEY)
    assert isinstance(list(client.files.list()), list)
    assert emulator.last()["path"] == "/openai/files"


def test_env_mode_chat_still_uses_the_model_as_deployment(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    client = _client(start_gateway(_env_mode(emulator)))
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content
    assert emulator.last()["path"] == "/openai/deployments/gpt-4o/chat/completions"


def test_no_default_endpoint_and_no_deployment_is_a_clear_4xx(
    start_gateway: Callable[[Settings], ServerThread]
) -> None:
    client = _client(start_gateway(load_settings({}, {})))
    for call in (client.files.list, client.batches.list, lambda: client.files.retrieve("file-abc")):
        with pytest.raises(openai.APIStatusError) as caught:
            call()
        assert caught.value.status_code in (400, 404)
        body = caught.value.body
        assert isinstance(body, dict) and "message" in body
