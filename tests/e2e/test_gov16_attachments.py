"""A budgeted key may not start vector-store storage through a thread message's file
search attachment (Azure makes a vector store for the thread, billed per GB-day): 403
`not_metered` through the SDK, before Azure is called; a code-interpreter attachment and
a key without a budget go through (the emulator, which has no threads, answers 404)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_gaps15_governance import _remember
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

SEARCHED: Any = [{"file_id": "file-mine", "tools": [{"type": "file_search"}]}]
CODE: Any = [{"file_id": "file-mine", "tools": [{"type": "code_interpreter"}]}]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Assistants beta


def test_file_search_attachments_are_refused_to_a_budgeted_key_only(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    key_id, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    free_id, free = governed.key("free")
    _remember(governed, key_id, "thread_mine", "file-mine")
    _remember(governed, free_id, "thread_free", "file-free")
    client = governed.client(budgeted)
    seen = len(emulator.requests())
    for call in (
            lambda: client.beta.threads.messages.create(
                "thread_mine", role="user", content="read it", attachments=SEARCHED),
            lambda: client.beta.threads.create(messages=[
                {"role": "user", "content": "read it", "attachments": SEARCHED}])):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        assert refused.value.code == "not_metered" and "GB-day" in refused.value.message
    assert len(emulator.requests()) == seen  # none reached Azure
    with pytest.raises(openai.NotFoundError):  # reached the emulator: no threads there
        client.beta.threads.messages.create("thread_mine", role="user", content="run it",
                                            attachments=CODE)
    with pytest.raises(openai.NotFoundError):
        governed.client(free).beta.threads.messages.create(
            "thread_free", role="user", content="read it",
            attachments=[{"file_id": "file-free", "tools": [{"type": "file_search"}]}])
    assert len(emulator.requests()) == seen + 2


def test_storage_spelled_in_other_letters_is_refused_too(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    """Azure binds JSON names case-insensitively: `Tool_Resources` starts storage there
    as `tool_resources` does (found by session 16's review; it reached Azure before)."""
    key_id, secret = governed.key("budget", limits=Limits(budget_usd=100.0))
    _remember(governed, key_id, "file-mine")
    stores = {"file_search": {"vector_stores": [{"file_ids": ["file-mine"]}]}}
    seen = len(emulator.requests())
    for body in ({"model": "gpt-4o", "tool_resources": stores},
                 {"model": "gpt-4o", "Tool_Resources": stores}):
        answer = httpx.post(governed.server.url + "/v1/assistants", json=body,
                            headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "not_metered"
    assert len(emulator.requests()) == seen
