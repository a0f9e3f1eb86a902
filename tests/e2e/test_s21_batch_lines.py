"""What a key with an allow-list may batch (issue 13): a batch line's `body.model` is the
name of the deployment Azure runs it on (the gateway relays the file as it is: no name
in it is mapped), so it is judged by the model the configured deployment of that name
serves, as the chat route judges a deployment's name, never by a client model name that
happens to be spelled the same (session 21's suspected gaps 2 and 3). The official
`openai` SDK through the gateway to the emulator, which runs a batch line on the
deployment it names."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, Emulator, emulator_with, gateway_settings
from tests.e2e.test_virtual_keys import ADMIN_KEY, HELLO, Governed, governed_gateway
from tests.support import ServerThread

_BOM = b"\xef\xbb\xbf"


def _lines(*models: str) -> bytes:
    return b"".join(json.dumps({"custom_id": str(n), "method": "POST",
                                "url": "/chat/completions",
                                "body": {"model": model, "messages": HELLO}}).encode() + b"\n"
                    for n, model in enumerate(models))


def _upload(client: openai.OpenAI, content: bytes) -> str:
    return client.files.create(file=("batch.jsonl", io.BytesIO(content), "application/jsonl"),
                               purpose="batch").id


def _batch(client: openai.OpenAI, file_id: str) -> Any:
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def test_a_batch_file_that_starts_with_a_bom_is_never_a_way_past_the_allow_list(
        governed: Governed) -> None:
    """A UTF-8 BOM before the first line (Windows tools write one) makes that line no
    JSON to the gateway's reader: the file's models are not known, so a batch from it
    is refused to a key with an allow-list (403 `batch_not_allowed`), whatever its lines
    name; never let through with the first line's model unjudged. (No gap: this pins it.)"""
    _, secret = governed.key("mini-only", models=("gpt-4o-mini",))
    client = governed.client(secret)
    for models in (("o3-mini", "gpt-4o-mini"), ("gpt-4o-mini", "o3-mini"), ("gpt-4o-mini",)):
        file_id = _upload(client, _BOM + _lines(*models))
        with pytest.raises(openai.PermissionDeniedError) as refused:
            _batch(client, file_id)
        assert refused.value.code == "batch_not_allowed", models
    # the same lines without the BOM: judged line by line
    with pytest.raises(openai.NotFoundError) as judged:
        _batch(client, _upload(client, _lines("gpt-4o-mini", "o3-mini")))
    assert judged.value.code == "model_not_found"
    assert _batch(client, _upload(client, _lines("gpt-4o-mini"))).status == "validating"


# The operator moved the client name `chat-small` to a new deployment, `small-v2`, and
# reused the old deployment's name, `chat-small`, for a dearer model (`chat-large`).
_SMALL = EmulatedDeployment("small-v2", "gpt-4o-mini-2024-07-18", "chat")
_LARGE = EmulatedDeployment("chat-small", "o3-mini-2025-01-31", "chat")


@pytest.fixture
def renamed(tmp_path: Path,
            start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with emulator_with(_SMALL, _LARGE) as emulator:
        database = tmp_path / "gateway.db"
        settings = gateway_settings(
            emulator.url, database=f"sqlite://{database}", admin_key=ADMIN_KEY,
            deployment_config=[
                {"model_name": model, "deployment_name": deployment, "endpoint": emulator.url,
                 "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
                for model, deployment in (("chat-small", "small-v2"),
                                          ("chat-large", "chat-small"))])
        store = KeyStore.open(database)
        try:
            yield Governed(start_gateway(settings), database, store)
        finally:
            store.close()


def test_a_batch_line_is_judged_by_the_deployment_it_names_as_chat_judges_it(
        renamed: Governed) -> None:
    _, secret = renamed.key("small-only", models=("chat-small",))
    client = renamed.client(secret)
    # chat: `chat-small` is the client's name, served by small-v2; the deployment's own
    # name `small-v2` is judged by the model it serves; `chat-large` is refused
    assert client.chat.completions.create(model="chat-small", messages=HELLO).model
    assert client.chat.completions.create(model="small-v2", messages=HELLO).model
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="chat-large", messages=HELLO)
    # a batch line's `chat-small` runs on the deployment of that name: chat-large's.
    # On main the batch was made (its line judged as the client name `chat-small`).
    with pytest.raises(openai.NotFoundError) as refused:
        _batch(client, _upload(client, _lines("chat-small")))
    assert refused.value.code == "model_not_found"
    assert "chat-small" in refused.value.body["message"]  # type: ignore[index]
    # the deployment of the model it may use, by its name, is batched
    assert _batch(client, _upload(client, _lines("small-v2"))).status == "validating"
