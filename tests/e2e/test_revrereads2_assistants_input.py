"""The emulator's Assistants API (emulator/assistants.py) answers a malformed body with
Azure's 400, never a 500: `additional_messages` not a list of objects, `instructions`
not a string, `metadata` not an object. Was (rereads2): a 500 at the run's creation, or
(a run's or its assistant's `instructions` not a string) at every later read of the
thread's messages or runs, which completed the run: the thread poisoned for good."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import AZURE_KEY, Emulator

_VERSION = {"api-version": "2024-05-01-preview"}


def _post(emulator: Emulator, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{emulator.url}/openai/{path}", params=_VERSION, json=body,
                      headers={"api-key": AZURE_KEY}, timeout=10)


def _get(emulator: Emulator, path: str) -> httpx.Response:
    return httpx.get(f"{emulator.url}/openai/{path}", params=_VERSION,
                     headers={"api-key": AZURE_KEY}, timeout=10)


@pytest.mark.parametrize("run", [
    {"additional_messages": "hi"},
    {"additional_messages": [5]},
    {"instructions": ["be brief"]},
    {"instructions": 5},
    {"metadata": 5},
])
def test_a_malformed_run_is_a_400_and_the_thread_still_reads(emulator: Emulator,
                                                             run: dict[str, Any]) -> None:
    helper = _post(emulator, "assistants", {"model": "gpt-4o"}).json()
    thread = _post(emulator, "threads", {"messages": [{"role": "user", "content": "hi"}]})
    thread_id = thread.json()["id"]
    made = _post(emulator, f"threads/{thread_id}/runs", {"assistant_id": helper["id"], **run})
    assert made.status_code == 400, made.text
    assert made.json()["error"]["type"] == "invalid_request_error"
    assert _get(emulator, f"threads/{thread_id}/messages").status_code == 200
    assert _get(emulator, f"threads/{thread_id}/runs").status_code == 200


@pytest.mark.parametrize(("path", "body"), [
    ("assistants", {"model": "gpt-4o", "instructions": 5}),
    ("assistants", {"model": "gpt-4o", "metadata": "x"}),
    ("threads", {"metadata": 5}),
    ("threads", {"messages": [{"role": "user", "content": "hi", "metadata": 5}]}),
])
def test_a_malformed_assistant_or_thread_is_a_400(emulator: Emulator, path: str,
                                                  body: dict[str, Any]) -> None:
    made = _post(emulator, path, body)
    assert made.status_code == 400, made.text


def test_a_thread_update_with_malformed_metadata_is_a_400(emulator: Emulator) -> None:
    thread_id = _post(emulator, "threads", {}).json()["id"]
    assert _post(emulator, f"threads/{thread_id}", {"metadata": 5}).status_code == 400
    assert _get(emulator, f"threads/{thread_id}").json()["metadata"] == {}
