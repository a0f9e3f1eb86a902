"""Stored chat completions (`store: true`): the emulator keeps them and serves them on the
v1 API as Azure does (list, retrieve, update, delete, messages); through the gateway a
virtual key sees only its own, as with every stored object (gateway/ownership.py)."""

from __future__ import annotations

import openai

from tests.e2e.conftest import AZURE_KEY, Emulator

HI = [{"role": "user", "content": "hi"}]


def test_the_emulator_stores_chat_completions_on_the_v1_api(emulator: Emulator) -> None:
    azure = openai.OpenAI(base_url=emulator.url + "/openai/v1", api_key=AZURE_KEY,
                          max_retries=0)
    made = azure.chat.completions.create(model="gpt-4o", messages=HI, store=True,
                                         metadata={"team": "a"})
    azure.chat.completions.create(model="gpt-4o", messages=HI)  # not stored
    streamed = list(azure.chat.completions.create(model="gpt-4o", messages=HI, store=True,
                                                  stream=True))
    streamed_id = next(c.id for c in streamed if c.id)
    assert [c.id for c in azure.chat.completions.list()] == [made.id, streamed_id]
    assert [c.id for c in azure.chat.completions.list(metadata={"team": "a"})] == [made.id]
    assert azure.chat.completions.retrieve(made.id).metadata == {"team": "a"}
    assert azure.chat.completions.update(made.id, metadata={"team": "b"}).metadata == {
        "team": "b"}
    assert [m.content for m in azure.chat.completions.messages.list(made.id)] == ["hi"]
    assert azure.chat.completions.delete(made.id).deleted
    assert [c.id for c in azure.chat.completions.list()] == [streamed_id]
