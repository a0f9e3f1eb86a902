"""A virtual key with an allow-list keeps its files and batches on a resource it may
use: a request that names no model goes to the first pool the key is allowed that holds
objects, not to the home pool (issue 13's open gap). Two emulators stand for two Azure
resources; the official `openai` SDK through the gateway."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config, gateway_settings
from tests.e2e.test_virtual_keys import Governed
from tests.support import ServerThread, serve

VERSION = "2025-04-01-preview"


@pytest.fixture
def east() -> Iterator[Emulator]:
    with serve(lambda: create_emulator_app(emulator_config())) as server:
        yield Emulator(server)


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator, east: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    """`gpt-4o-mini` (first in the file: the home pool) on `emulator`, `gpt-4o` on
    `east`, and a Foundry-only model."""
    database = tmp_path / "gateway.db"
    azure = {"api_key": AZURE_KEY, "api_version": VERSION}
    deployments = [
        {"model_name": "gpt-4o-mini", "deployment_name": "gpt-4o-mini",
         "endpoint": emulator.url, **azure},
        {"model_name": "gpt-4o", "deployment_name": "gpt-4o", "endpoint": east.url, **azure},
        {"model_name": "llama", "deployment_name": "Llama-3-70B", "endpoint": east.url,
         "api_key": AZURE_KEY, "api": "foundry"},
    ]
    settings = gateway_settings(emulator.url, database=f"sqlite://{database}",
                                deployment_config=deployments)
    store = KeyStore.open(database)
    try:
        yield Governed(start_gateway(settings), database, store)
    finally:
        store.close()


def _batch_file() -> Any:
    line = json.dumps({"custom_id": "1", "method": "POST", "url": "/chat/completions",
                       "body": {"model": "gpt-4o", "messages": [{"role": "user",
                                                                 "content": "hi"}]}})
    return ("batch.jsonl", io.BytesIO(line.encode() + b"\n"), "application/jsonl")


def _paths(emulator: Emulator) -> list[tuple[str, str]]:
    return [(entry["method"], entry["path"]) for entry in emulator.requests()]


def test_an_allow_listed_keys_upload_and_batch_go_to_a_pool_it_may_use(
        governed: Governed, emulator: Emulator, east: Emulator) -> None:
    _, secret = governed.key("only-4o", models=("gpt-4o",))
    client = governed.client(secret)
    uploaded = client.files.create(file=_batch_file(), purpose="batch")
    assert east.last()["path"] == "/openai/files" and east.last()["status"] == 201
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert [f.id for f in client.files.list()] == [uploaded.id]
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert east.last()["path"] == "/openai/batches" and east.last()["status"] == 200
    assert client.batches.retrieve(batch.id).id == batch.id
    assert _paths(emulator) == []  # the home pool's resource never saw the key's objects


def test_a_key_without_an_allow_list_still_uses_the_home_pool(
        governed: Governed, emulator: Emulator, east: Emulator) -> None:
    _, secret = governed.key("free")
    governed.client(secret).files.create(file=_batch_file(), purpose="batch")
    assert _paths(emulator) == [("POST", "/openai/files")] and _paths(east) == []


@pytest.mark.parametrize("models", [("llama",), ("no-such-model",)])
def test_a_key_allowed_no_pool_that_holds_files_gets_a_clear_403(
        governed: Governed, emulator: Emulator, east: Emulator,
        models: tuple[str, ...]) -> None:
    _, secret = governed.key("no-files", models=models)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        governed.client(secret).files.create(file=_batch_file(), purpose="batch")
    assert refused.value.code == "no_deployment_allowed"
    assert "no deployment that can hold files" in refused.value.message
    assert _paths(emulator) == [] and _paths(east) == []


def test_static_client_keys_are_unchanged(governed: Governed, emulator: Emulator) -> None:
    static = openai.OpenAI(base_url=governed.server.url + "/v1", api_key=CLIENT_KEY,
                           max_retries=0, timeout=30)
    static.files.create(file=_batch_file(), purpose="batch")
    assert _paths(emulator) == [("POST", "/openai/files")]
