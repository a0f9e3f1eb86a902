"""A streamed Responses call's id and output items are the key's that made it, as a
created (not streamed) one's are: a key with an allow-list or a budget chains from it
(`previous_response_id`), references its items (`item_reference`) and reads it, and
another key gets the 404 of an object that is not its own. The official `openai` SDK
through the gateway to the emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed_gateway
from tests.support import ServerThread


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def _streamed(client: openai.OpenAI) -> tuple[str, list[str]]:
    """Stream a response to its end: its id and its output items' ids."""
    created = None
    added: list[str] = []
    with client.responses.stream(model="gpt-4o", input="hi") as stream:
        for event in stream:
            if event.type == "response.created":
                created = event.response.id
            elif event.type == "response.output_item.added":
                added.append(event.item.id or "")
        final = stream.get_final_response()
    assert created is not None and created == final.id
    assert added and added == [getattr(item, "id", None) for item in final.output]
    return final.id, added


def _referencing(item_id: str) -> list[Any]:
    return [{"type": "item_reference", "id": item_id},
            {"role": "user", "content": [{"type": "input_text", "text": "and then?"}]}]


def _refused(call: Callable[[], Any], object_id: str) -> None:
    # The same refusal as for any other object that is not the caller's.
    with pytest.raises(openai.NotFoundError) as refused:
        call()
    assert refused.value.body == {
        "message": f"No such object: {object_id}", "type": "invalid_request_error",
        "param": "id", "code": None}


def _refuses_all(other: openai.OpenAI, response_id: str, item_id: str) -> None:
    _refused(lambda: other.responses.create(model="gpt-4o", input="x",
                                            previous_response_id=response_id), response_id)
    _refused(lambda: other.responses.create(model="gpt-4o", input=_referencing(item_id)),
             item_id)
    _refused(lambda: other.responses.retrieve(response_id), response_id)


def test_a_restricted_key_chains_from_its_own_streamed_response(
        governed: Governed, emulator: Emulator) -> None:
    _, secret = governed.key("agent", models=("gpt-4o",))
    client = governed.client(secret)
    response_id, items = _streamed(client)
    chained = client.responses.create(model="gpt-4o", input="and then?",
                                      previous_response_id=response_id)
    assert chained.id and emulator.last()["json"]["previous_response_id"] == response_id
    assert client.responses.create(model="gpt-4o", input=_referencing(items[0])).id
    assert emulator.last()["json"]["input"][0] == {"type": "item_reference", "id": items[0]}
    assert client.responses.retrieve(response_id).id == response_id
    # A stream chained from a stream: the agents' loop.
    with client.responses.stream(model="gpt-4o", input="more",
                                 previous_response_id=chained.id) as stream:
        again = stream.get_final_response()
    assert client.responses.create(model="gpt-4o", input="last",
                                   previous_response_id=again.id).id


def test_another_key_may_not_name_a_streamed_response_or_its_items(
        governed: Governed, emulator: Emulator) -> None:
    _, a_secret = governed.key("a", models=("gpt-4o",))
    _, b_secret = governed.key("b", models=("gpt-4o",))
    _, free_secret = governed.key("free")
    response_id, items = _streamed(governed.client(a_secret))
    seen = len(emulator.requests())
    for secret in (b_secret, free_secret):
        _refuses_all(governed.client(secret), response_id, items[0])
    assert len(emulator.requests()) == seen  # refused at the gateway


def test_a_key_without_restrictions_chains_from_its_stream_as_before(
        governed: Governed) -> None:
    """Its own flow unchanged; its streamed response is now its own, as a created one
    is: another key, even one without restrictions, may not name it."""
    _, secret = governed.key("free")
    _, other_secret = governed.key("other-free")
    client = governed.client(secret)
    response_id, items = _streamed(client)
    assert client.responses.create(model="gpt-4o", input="x",
                                   previous_response_id=response_id).id
    assert client.responses.create(model="gpt-4o", input=_referencing(items[0])).id
    _refuses_all(governed.client(other_secret), response_id, items[0])


def test_what_a_stream_left_midway_showed_is_the_keys(governed: Governed) -> None:
    _, secret = governed.key("leaves", models=("gpt-4o",))
    client = governed.client(secret)
    response_id = item_id = None
    with client.responses.create(model="gpt-4o", input="hi", stream=True) as stream:
        for event in stream:
            if event.type == "response.created":
                response_id = event.response.id
            elif event.type == "response.output_item.added":
                item_id = event.item.id
                break  # the client leaves: the stream is closed before its end
    assert response_id is not None and item_id is not None
    assert client.responses.create(model="gpt-4o", input="x",
                                   previous_response_id=response_id).id
    assert client.responses.create(model="gpt-4o", input=_referencing(item_id)).id
