"""A Responses `item_reference` names a stored item like any other reference names an
object: a virtual key may reference only its own responses' items (issue 13's open
gap). The official `openai` SDK through the gateway to the emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_virtual_keys import Governed, governed_gateway
from tests.support import ServerThread


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


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


def test_a_key_may_reference_only_its_own_responses_items(
        governed: Governed, emulator: Emulator) -> None:
    _, a_secret = governed.key("a", models=("gpt-4o",))
    _, b_secret = governed.key("b", models=("gpt-4o",))
    _, free_secret = governed.key("free")
    a, b, free = (governed.client(s) for s in (a_secret, b_secret, free_secret))
    created = a.responses.create(model="gpt-4o", input="hi")
    item_id = created.output[0].id
    assert item_id and item_id != created.id
    seen = len(emulator.requests())
    _refused(lambda: b.responses.create(model="gpt-4o", input=_referencing(item_id)), item_id)
    _refused(lambda: free.responses.create(model="gpt-4o", input=_referencing(item_id)),
             item_id)  # known to be a's: refused to any other key
    assert len(emulator.requests()) == seen  # refused at the gateway
    # The owner may, and the request reaches Azure with the reference intact.
    assert a.responses.create(model="gpt-4o", input=_referencing(item_id)).id
    assert emulator.last()["json"]["input"][0] == {"type": "item_reference", "id": item_id}


def test_an_item_of_unknown_owner_is_refused_to_a_restricted_key_only(
        governed: Governed) -> None:
    static = openai.OpenAI(base_url=governed.server.url + "/v1", api_key=CLIENT_KEY,
                           max_retries=0)
    item_id = static.responses.create(model="gpt-4o", input="hi").output[0].id
    assert item_id
    _, listed = governed.key("listed", models=("gpt-4o",))
    _, free = governed.key("free")
    _refused(lambda: governed.client(listed).responses.create(
        model="gpt-4o", input=_referencing(item_id)), item_id)
    assert governed.client(free).responses.create(model="gpt-4o",
                                                  input=_referencing(item_id)).id


def test_listing_another_keys_responses_input_items_is_refused_before_it_is_sent(
        governed: Governed, emulator: Emulator) -> None:
    """Review (gapsreview): the listing that hands input items to the key must never run
    for another key's response, so nothing of it can be claimed."""
    _, a_secret = governed.key("a", models=("gpt-4o",))
    _, free_secret = governed.key("free")
    created = governed.client(a_secret).responses.create(model="gpt-4o", input="hi")
    seen = len(emulator.requests())
    _refused(lambda: governed.client(free_secret).responses.input_items.list(created.id),
             created.id)
    assert len(emulator.requests()) == seen
