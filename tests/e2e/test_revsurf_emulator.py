"""Review of the surfaces branch: the emulator's new Responses routes answer a bad
query with Azure's 400, never a 500 of its own."""

from __future__ import annotations

import httpx
import openai

from tests.e2e.conftest import AZURE_KEY, Emulator


def test_a_resumed_streams_bad_starting_after_is_a_400(emulator: Emulator) -> None:
    azure = openai.OpenAI(base_url=emulator.url + "/openai/v1", api_key=AZURE_KEY,
                          max_retries=0)
    events = list(azure.responses.create(model="gpt-4o", input="hello", background=True,
                                         stream=True))
    made = events[0].response  # type: ignore[union-attr]
    url = f"{emulator.url}/openai/v1/responses/{made.id}"
    for bad in ("--1", "-", "1.5", "x", "\u00b2", "1" * 5000):
        answer = httpx.get(url, params={"stream": "true", "starting_after": bad},
                           headers={"api-key": AZURE_KEY})
        assert answer.status_code == 400, (bad, answer.status_code)  # main: 500 ("--1", "²", 5,000 digits)
        assert answer.json()["error"]["param"] == "starting_after"
    assert httpx.get(url, params={"stream": "true", "starting_after": "-1"},
                     headers={"api-key": AZURE_KEY}).status_code == 200


def test_a_batch_lists_bad_limit_is_a_400(emulator: Emulator) -> None:
    for bad in ("\u00b2", "0", "101", "x", "1" * 5000):
        answer = httpx.get(f"{emulator.url}/openai/v1/batches", params={"limit": bad},
                           headers={"api-key": AZURE_KEY})
        assert answer.status_code == 400, (bad, answer.status_code)  # main: 500 ("²", 5,000 digits)
        assert answer.json()["error"]["param"] == "limit"
