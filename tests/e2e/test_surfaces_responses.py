"""The Responses API's calls on a stored response through the gateway, by the official
openai SDK, against an emulator that serves them as Azure does: cancel (a background
response's), input_items (paged, newest first by default), delete; and none of them
for another key's response."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_object_ownership import governed  # noqa: F401
from tests.e2e.test_virtual_keys import Governed

THREE: Any = [{"role": "user", "content": f"turn {n}"} for n in range(3)]


def test_cancel_input_items_and_delete_through_the_gateway(
        client: openai.OpenAI, emulator: Emulator) -> None:
    queued = client.responses.create(model="gpt-4o", input="hello", background=True)
    cancelled = client.responses.cancel(queued.id)
    assert emulator.last()["path"] == f"/openai/responses/{queued.id}/cancel"
    assert (cancelled.status, cancelled.output, cancelled.usage) == ("cancelled", [], None)
    assert client.responses.retrieve(queued.id).status == "cancelled"
    foreground = client.responses.create(model="gpt-4o", input=THREE)
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(foreground.id)
    listed = client.responses.input_items.list(foreground.id, limit=2)
    assert emulator.last()["query_params"]["limit"] == ["2"]
    assert listed.has_more is True and len(listed.data) == 2
    texts = [item.content[0].text for item in client.responses.input_items.list(  # type: ignore[union-attr]
        foreground.id, limit=2)]
    assert texts == ["turn 2", "turn 1", "turn 0"]  # newest first, paged by the SDK
    oldest = client.responses.input_items.list(foreground.id, order="asc").data[0]
    assert oldest.content[0].text == "turn 0"  # type: ignore[union-attr]
    assert client.responses.delete(foreground.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(foreground.id)


def test_another_keys_response_cannot_be_cancelled_listed_or_deleted(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    a = governed.client(governed.key("a")[1])
    b = governed.client(governed.key("b")[1])
    queued = a.responses.create(model="gpt-4o", input=THREE, background=True)
    before = len(emulator.requests())
    for call in (lambda: b.responses.cancel(queued.id),
                 lambda: b.responses.input_items.list(queued.id),
                 lambda: b.responses.retrieve(queued.id),
                 lambda: b.responses.delete(queued.id)):
        with pytest.raises(openai.NotFoundError) as refused:
            call()
        assert refused.value.body["message"] == f"No such object: {queued.id}"  # type: ignore[index]
    assert len(emulator.requests()) == before  # none reached Azure
    items = a.responses.input_items.list(queued.id).data
    assert len(items) == 3
    reference: Any = [{"type": "item_reference", "id": items[0].id}]
    with pytest.raises(openai.NotFoundError):  # the key's input items, listed: not b's
        b.responses.create(model="gpt-4o", input=reference)
    assert a.responses.create(model="gpt-4o", input=reference).status == "completed"
    assert a.responses.cancel(queued.id).status == "cancelled"
