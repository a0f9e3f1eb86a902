"""A background response's stream the client left early and resumed (`GET
responses/{id}?stream=true&starting_after=N`) shows the output items the left stream did
not reach: they are the key's as a POST stream's are (claimed as the events naming them
pass), so a key with an allow-list may name them (`item_reference`) at once. Without a
claim on the resumed stream they were of unknown owner: a 404 for the key's own item,
until it read the response back. Another key still gets the 404.

The governed gateway (test_virtual_keys') before the emulator, the official SDK."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.test_streamed_response_ownership import _referencing, _refused
from tests.e2e.test_virtual_keys import Governed, governed_gateway
from tests.support import ServerThread


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def _left_early(governed: Governed, secret: str) -> tuple[str, int]:
    """A background stream the emulator cuts after its first 2 events (created, in
    progress: no item yet): the response's id and its last sequence number relayed."""
    answer = httpx.post(governed.server.url + "/v1/responses", timeout=30,
                        headers={"Authorization": f"Bearer {secret}"},
                        json={"model": "gpt-4o", "input": "hello", "background": True,
                              "stream": True})
    events = [json.loads(line[6:]) for line in answer.text.splitlines()
              if line.startswith("data: ")]
    assert answer.status_code == 200 and events[0]["type"] == "response.created"
    assert not any(e.get("item") for e in events)  # no item shown before the cut
    sequenced = [e["sequence_number"] for e in events if "sequence_number" in e]
    return events[0]["response"]["id"], sequenced[-1]  # (then the gateway's error event)


def test_a_resumed_streams_items_are_the_keys(governed: Governed, emulator: Emulator) -> None:
    _, secret = governed.key("resumer", models=("gpt-4o",))
    _, other = governed.key("other", models=("gpt-4o",))
    emulator.fault("gpt-4o", "cut", after_frames=2)
    response_id, last = _left_early(governed, secret)
    client = governed.client(secret)
    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=last))
    items = [e.item.id for e in resumed if e.type == "response.output_item.added"]  # type: ignore[union-attr]
    assert items and resumed[-1].type == "response.completed"
    assert client.responses.create(model="gpt-4o", input=_referencing(items[0])).id  # main: 404
    _refused(lambda: governed.client(other).responses.create(
        model="gpt-4o", input=_referencing(items[0])), items[0])
