"""A pool across two Azure resources: files, batches and stored responses go back to the
resource that created them (each emulator is a separate resource with its own storage)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config
from tests.support import ServerThread, serve

LINE = (b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o",'
        b'"messages":[{"role":"user","content":"hi"}]}}\n')


@pytest.fixture
def regions() -> Iterator[tuple[Emulator, Emulator]]:
    with serve(lambda: create_emulator_app(emulator_config())) as east, \
            serve(lambda: create_emulator_app(emulator_config())) as west:
        yield Emulator(east), Emulator(west)


@pytest.fixture
def client(regions: tuple[Emulator, Emulator],
           start_gateway: Callable[[Settings], ServerThread]) -> Any:
    from openai import OpenAI

    east, west = regions
    settings = load_settings({
        "client_keys": [CLIENT_KEY],
        "models": {"gpt-4o": [
            {"deployment_name": "gpt-4o", "endpoint": east.url, "api_key": AZURE_KEY,
             "api_version": "2025-04-01-preview"},
            {"deployment_name": "gpt-4o", "endpoint": west.url, "api_key": AZURE_KEY,
             "api_version": "2025-04-01-preview"},
        ]},
    }, {})
    gateway = start_gateway(settings)
    return OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def counts(regions: tuple[Emulator, Emulator]) -> tuple[int, int]:
    return len(regions[0].requests()), len(regions[1].requests())


def created_where(regions: tuple[Emulator, Emulator], before: tuple[int, int]) -> int:
    """Which region (0 or 1) took the one request made since `before`."""
    after = counts(regions)
    grew = [i for i in (0, 1) if after[i] > before[i]]
    assert len(grew) == 1, (before, after)
    return grew[0]


def rounds(homes: set[int]) -> Iterator[int]:
    """The balancer picks at random: 8 rounds, or more until both resources were used
    (8 rounds alone all land on one resource in 1 run out of 128)."""
    for round_ in range(40):
        if round_ >= 8 and homes == {0, 1}:
            return
        yield round_


def test_files_and_batches_stay_on_their_resource(client: Any, regions: tuple[Emulator, Emulator]) -> None:
    homes: set[int] = set()
    for _ in rounds(homes):
        before = counts(regions)
        file = client.files.create(file=("b.jsonl", LINE, "application/jsonl"), purpose="batch")
        home = created_where(regions, before)
        homes.add(home)
        before = counts(regions)
        for _ in range(3):
            assert client.files.retrieve(file.id).id == file.id
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        assert client.batches.retrieve(batch.id).id == batch.id
        after = counts(regions)
        assert after[1 - home] == before[1 - home]  # nothing went to the other region
        assert after[home] == before[home] + 5
    assert homes == {0, 1}  # the balancer did spread the uploads


def test_stored_responses_stay_on_their_resource(client: Any, regions: tuple[Emulator, Emulator]) -> None:
    homes: set[int] = set()
    for _ in rounds(homes):
        before = counts(regions)
        first = client.responses.create(model="gpt-4o", input="Remember this")
        home = created_where(regions, before)
        homes.add(home)
        before = counts(regions)
        assert client.responses.retrieve(first.id).id == first.id
        follow_up = client.responses.create(model="gpt-4o", input="And now?",
                                            previous_response_id=first.id)
        assert follow_up.output_text
        after = counts(regions)
        assert after[1 - home] == before[1 - home]
    assert homes == {0, 1}


def test_streamed_responses_stay_on_their_resource(
        client: Any, regions: tuple[Emulator, Emulator]) -> None:
    """The id of a streamed response is known from its `response.created` event: a later
    retrieve, chain, input-items listing or delete goes to the resource that made it."""
    homes: set[int] = set()
    for _ in rounds(homes):
        before = counts(regions)
        with client.responses.stream(model="gpt-4o", input="Remember this") as stream:
            first = stream.get_final_response()
        home = created_where(regions, before)
        homes.add(home)
        before = counts(regions)
        assert client.responses.retrieve(first.id).id == first.id
        assert client.responses.create(model="gpt-4o", input="And now?",
                                       previous_response_id=first.id).output_text
        with client.responses.stream(model="gpt-4o", input="Streamed again",
                                     previous_response_id=first.id) as stream:
            assert stream.get_final_response().output_text
        after = counts(regions)
        assert after[1 - home] == before[1 - home]  # the other resource never saw it
        assert after[home] == before[home] + 3
    assert homes == {0, 1}


def test_a_stream_left_midway_stays_on_its_resource(
        client: Any, regions: tuple[Emulator, Emulator]) -> None:
    """Recorded when the stream names it, not when the stream ends: a client that reads
    the id and leaves (or asks while the stream still runs) finds it."""
    homes: set[int] = set()
    for _ in rounds(homes):
        before = counts(regions)
        response_id = None
        with client.responses.create(model="gpt-4o", input="hi", stream=True) as stream:
            for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                    break  # the client leaves at the first event
        assert response_id is not None
        home = created_where(regions, before)
        homes.add(home)
        before = counts(regions)
        assert client.responses.retrieve(response_id).id == response_id
        after = counts(regions)
        assert after == tuple(before[i] + (i == home) for i in (0, 1))
    assert homes == {0, 1}
