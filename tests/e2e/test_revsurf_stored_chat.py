"""Stored chat completions (`store: true`): the emulator keeps them and serves them on the
v1 API as Azure does (list, retrieve, update, delete, messages); through the gateway a
virtual key sees only its own, as with every stored object (gateway/ownership.py)."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.e2e.test_ledger import ledger_gateway, records  # noqa: F401
from tests.e2e.test_surfaces_background import _tokens, keyed  # noqa: F401
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401
from tests.support import ServerThread

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


def test_a_key_sees_only_its_own_stored_chat_completions(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    """`GET /v1/chat/completions` was a 405; now each key lists, reads, updates, deletes
    and lists the messages of its own stored chat completions, and another key's are
    404s to it, as its other stored objects are. Sent to Azure's v1 API."""
    a = governed.client(governed.key("a", models=("gpt-4o",))[1])  # restricted
    b = governed.client(governed.key("b")[1])
    mine = a.chat.completions.create(model="gpt-4o", messages=HI, store=True,
                                     metadata={"topic": "x"})
    theirs = [b.chat.completions.create(model="gpt-4o", messages=HI, store=True).id
              for _ in range(3)]
    assert [c.id for c in a.chat.completions.list(limit=2)] == [mine.id]
    assert emulator.last()["path"] == "/openai/v1/chat/completions"
    assert [c.id for c in b.chat.completions.list()] == theirs
    assert [c.id for c in a.chat.completions.list(metadata={"topic": "x"})] == [mine.id]
    assert a.chat.completions.list(metadata={"topic": "y"}).data == []
    assert a.chat.completions.retrieve(mine.id).metadata == {"topic": "x"}
    assert [m.content for m in a.chat.completions.messages.list(mine.id)] == ["hi"]
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.retrieve(mine.id)
    for refused in (lambda: b.chat.completions.update(mine.id, metadata={"topic": "z"}),
                    lambda: b.chat.completions.delete(mine.id),
                    lambda: list(b.chat.completions.messages.list(mine.id)),
                    lambda: a.chat.completions.retrieve(theirs[0])):
        with pytest.raises(openai.NotFoundError):
            refused()
    assert a.chat.completions.update(mine.id, metadata={"topic": "z"}).metadata == {
        "topic": "z"}
    assert a.chat.completions.delete(mine.id).deleted


def test_reading_a_stored_chat_completion_counts_nothing_more(
        keyed: tuple[ServerThread, str, openai.OpenAI]) -> None:  # noqa: F811
    """A stored chat completion read or updated answers with the usage of the chat that
    made it: counted by that chat, not again by each read."""
    gateway, key_id, client = keyed
    made = client.chat.completions.create(model="gpt-4o", messages=HI, store=True)
    assert made.usage is not None
    once = _tokens(records(gateway), key_id)
    assert once == (made.usage.prompt_tokens, made.usage.completion_tokens)
    assert client.chat.completions.retrieve(made.id).usage is not None
    client.chat.completions.update(made.id, metadata={"read": "yes"})
    assert _tokens(records(gateway), key_id) == once
