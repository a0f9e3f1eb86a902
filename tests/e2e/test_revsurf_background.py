"""Review of the surfaces branch: a background response's generation is counted once
through the gateway, whatever else the key asks about it (a cancel answered with the
response as it is, done)."""

from __future__ import annotations

import openai

from tests.e2e.test_ledger import ledger_gateway, records  # noqa: F401
from tests.e2e.test_surfaces_background import (  # noqa: F401
    _tokens,
    keyed,
    streamed_background,
)
from tests.support import ServerThread


def test_cancelling_a_done_background_response_counts_nothing_more(
        keyed: tuple[ServerThread, str, openai.OpenAI]) -> None:  # noqa: F811
    gateway, key_id, client = keyed
    queued = client.responses.create(model="gpt-4o", input="hello", background=True,
                                     max_output_tokens=16)
    done = client.responses.retrieve(queued.id)
    assert done.usage is not None
    once = _tokens(records(gateway), key_id)
    assert once == (done.usage.input_tokens, done.usage.output_tokens)
    cancelled = client.responses.cancel(queued.id)  # done: answered as it is
    assert cancelled.status == "completed" and cancelled.usage is not None
    assert _tokens(records(gateway), key_id) == once  # main: counted again, (8, 32)


def test_a_resumed_background_stream_counts_nothing_more(
        keyed: tuple[ServerThread, str, openai.OpenAI]) -> None:  # noqa: F811
    """`responses.retrieve(id, stream=True, starting_after=N)`, how a client picks up a
    background stream it lost: the events it shows again end with the response's
    `response.completed` and its usage, which the stream that made it counted."""
    gateway, key_id, client = keyed
    final, once = streamed_background(keyed)
    resumed = list(client.responses.retrieve(final.id, stream=True, starting_after=2))
    assert resumed[-1].type == "response.completed"
    assert _tokens(records(gateway), key_id) == once
