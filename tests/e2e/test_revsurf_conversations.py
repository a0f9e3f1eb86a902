"""The Conversations API through a dated deployment (the Go tool's env mode): Azure serves
it on the v1 API alone (`/openai/v1/conversations...`; the dated path is its 404 on every
api-version), so the gateway sends it to the resource's v1 API, without an api-version,
whatever version the deployment's chat goes out on; it went to `/openai/conversations?
api-version=2024-10-21` and the client got Azure's 404 'Resource not found'."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.support import ServerThread


@pytest.mark.parametrize("explicit", [{}, {"AZURE_OPENAI_API_VER": "2024-10-21"}])
def test_conversations_reach_the_v1_api_from_a_dated_deployment(
        emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
        explicit: dict[str, str]) -> None:
    environ = {"AZURE_OPENAI_ENDPOINT": emulator.url, "AZURE_OPENAI_API_KEY": AZURE_KEY,
               **explicit}
    gateway = start_gateway(load_settings(None, environ, {"allow_open": True}))
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    made = client.conversations.create(
        metadata={"topic": "demo"},
        items=[{"type": "message", "role": "user", "content": "hello"}])
    sent = emulator.last()
    assert (sent["path"], sent["query_params"]) == ("/openai/v1/conversations", {})
    client.conversations.items.create(
        made.id, items=[{"type": "message", "role": "user", "content": "again"}])
    listed = client.conversations.items.list(made.id)
    assert len(listed.data) == 2
    assert client.conversations.retrieve(made.id).metadata == {"topic": "demo"}
    assert client.conversations.delete(made.id).deleted
    assert emulator.last()["path"] == f"/openai/v1/conversations/{made.id}"
    # Chat on the same deployment stays on the dated API.
    assert client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "hi"}]).choices
    assert emulator.last()["query_params"]["api-version"] == ["2024-10-21"]
