"""A chat streamed with `store: true` is the key's, as a JSON one is (gateway/ownership.py):
its id is claimed as the stream's first frame shows it, before the client sees it."""

from __future__ import annotations

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401

HI = [{"role": "user", "content": "hi"}]


def _streamed_id(client: openai.OpenAI, chunks: int | None = None) -> str:
    """Stream a stored chat; read `chunks` of it (all when None) and leave."""
    stream = client.chat.completions.create(model="gpt-4o", messages=HI, store=True,
                                            stream=True)
    seen: list[str] = []
    with stream:
        for chunk in stream:
            if chunk.id:
                seen.append(chunk.id)
            if chunks is not None and len(seen) >= chunks:
                break  # the client leaves: `with` closes the connection
    assert seen
    return seen[0]


def test_a_streamed_stored_chat_is_the_keys(governed: Governed) -> None:  # noqa: F811
    """Was: its id was not read from the stream, so no key listed it and a key with
    restrictions got a 404 for the chat it had just streamed."""
    a = governed.client(governed.key("a", models=("gpt-4o",))[1])  # restricted
    b = governed.client(governed.key("b", models=("gpt-4o",))[1])
    made = [_streamed_id(a) for _ in range(2)]
    assert a.chat.completions.retrieve(made[0]).id == made[0]
    assert [m.content for m in a.chat.completions.messages.list(made[1])] == ["hi"]
    assert sorted(c.id for c in a.chat.completions.list()) == sorted(made)
    assert list(b.chat.completions.list()) == []
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.retrieve(made[0])


def test_a_stream_left_midway_is_still_the_keys(governed: Governed) -> None:  # noqa: F811
    """A client that leaves after the first chunk was shown the chat's id; Azure (the
    emulator) keeps the chat: it is the key's, readable and listed, another key's 404."""
    a = governed.client(governed.key("a", models=("gpt-4o",))[1])
    b = governed.client(governed.key("b")[1])
    left = _streamed_id(a, chunks=1)
    assert a.chat.completions.retrieve(left).id == left
    assert [c.id for c in a.chat.completions.list()] == [left]
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.retrieve(left)
    assert list(b.chat.completions.list()) == []


def test_every_stored_chat_of_a_key_with_limits_is_its_own(
        governed: Governed) -> None:  # noqa: F811
    """A key with limits sends its plain chats by the short path (`Gateway._usual_chat`),
    which took `store: true` too and recorded no owner: only the first stored chat (sent
    by `_governed` before the key's limits were decided) was the key's, the next ones
    (JSON or streamed) listed to none and a 404 to the key with restrictions."""
    limits = Limits(rpm=100, tpm=100_000)
    a = governed.client(governed.key("a", models=("gpt-4o",), limits=limits)[1])
    b = governed.client(governed.key("b", limits=limits)[1])
    made = [a.chat.completions.create(model="gpt-4o", messages=HI, store=True).id
            for _ in range(3)]
    made += [_streamed_id(a) for _ in range(2)]
    assert sorted(c.id for c in a.chat.completions.list(limit=100)) == sorted(made)
    for made_id in made:
        assert a.chat.completions.retrieve(made_id).id == made_id
        with pytest.raises(openai.NotFoundError):
            b.chat.completions.retrieve(made_id)
    assert list(b.chat.completions.list()) == []
