"""A batch's lines are judged on the resource the batch runs on: the one holding its
input file. A pool spans two resources (two emulators, each its own storage); the
deployment a line names exists on one of them only. The file's home is recorded with its
owner in the governance database, so a batch made through another worker (here a
second gateway on the same database, as `--workers 2` runs two) goes to the file's
resource and is judged there. Before, that worker knew no home: the line was judged on
every resource of the pool (refused, 404, since one has no such deployment) and the
batch would have gone wherever the balancer sent it. The official `openai` SDK."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.e2e.pools import chat_deployment, pool_emulator
from tests.support import ServerThread, load_keys_now
from tests.waiting import until

_T = TypeVar("_T")
ADMIN_KEY = "admin-key-0123456789"
HELLO = [{"role": "user", "content": "hi"}]
_MINI = EmulatedDeployment("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "chat", rpm=60_000)
_O3 = EmulatedDeployment("o3-mini", "o3-mini-2025-01-31", "chat", rpm=60_000)


def _lines(model: str) -> bytes:
    return json.dumps({"custom_id": "1", "method": "POST", "url": "/chat/completions",
                       "body": {"model": model, "messages": HELLO}}).encode() + b"\n"


@pytest.fixture
def regions() -> Iterator[tuple[Emulator, Emulator]]:
    """east serves gpt-4o, gpt-4o-mini and o3-mini; west gpt-4o alone."""
    with pool_emulator(chat_deployment("gpt-4o"), _MINI, _O3) as east, \
            pool_emulator(chat_deployment("gpt-4o")) as west:
        yield east, west


def _settings(east: str, west: str, database: Path) -> Settings:
    def member(endpoint: str, name: str) -> dict[str, Any]:
        return {"deployment_name": name, "endpoint": endpoint, "api_key": AZURE_KEY,
                "api_version": "2025-04-01-preview"}

    return load_settings({
        "models": {  # gpt-4o first: the key's files go to its pool, on either resource
            "gpt-4o": [member(east, "gpt-4o"), member(west, "gpt-4o")],
            "gpt-4o-mini": [member(east, "gpt-4o-mini")],
            "o3-mini": [member(east, "o3-mini")],
        },
        "database": f"sqlite://{database}", "admin_key": ADMIN_KEY,
    }, {})


def _loaded(gateway: ServerThread, secret: str) -> bool:
    async def ask() -> bool:
        try:
            gateway.app.gateway.directory.authenticate(secret)
        except AuthenticationFailed:
            return False
        return True

    return bool(gateway.call(ask))


@pytest.fixture
def gateways(tmp_path: Path, regions: tuple[Emulator, Emulator],
             start_gateway: Callable[[Settings], ServerThread]
             ) -> tuple[ServerThread, ServerThread, str]:
    """Two gateways on one database (two workers), and the secret of a key allowed
    gpt-4o and gpt-4o-mini (not o3-mini) that both have loaded."""
    database = tmp_path / "gateway.db"
    settings = _settings(regions[0].url, regions[1].url, database)
    gateways = start_gateway(settings), start_gateway(settings)
    store = KeyStore.open(database)
    try:
        _, secret = store.create_key("batcher", models=("gpt-4o", "gpt-4o-mini"),
                                     now=time.time())
    finally:
        store.close()
    for gateway in gateways:
        load_keys_now(gateway)  # not the next poll's (up to 0.5 s a key)
        until(lambda gateway=gateway: _loaded(gateway, secret), timeout=10,  # type: ignore[misc]
              message="a gateway never loaded the new key")
    return gateways[0], gateways[1], secret


@pytest.fixture
def workers(gateways: tuple[ServerThread, ServerThread, str]
            ) -> tuple[openai.OpenAI, openai.OpenAI]:
    """A client of each gateway for the key."""
    one, other = (openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateways[2],
                                max_retries=0, timeout=30) for gateway in gateways[:2])
    return one, other


def _counts(regions: tuple[Emulator, Emulator]) -> tuple[int, int]:
    return len(regions[0].requests()), len(regions[1].requests())


def _uploaded_on_each(client: openai.OpenAI, regions: tuple[Emulator, Emulator],
                      content: bytes) -> dict[int, str]:
    """Files of `content` uploaded until one is on each resource (the balancer picks at
    random: bounded): {0 (east) or 1 (west): file id}."""
    homes: dict[int, str] = {}
    for _ in range(40):
        if len(homes) == 2:
            break
        before = _counts(regions)
        file_id = client.files.create(
            file=("batch.jsonl", io.BytesIO(content), "application/jsonl"),
            purpose="batch").id
        after = _counts(regions)
        grew = [region for region in (0, 1) if after[region] > before[region]]
        assert len(grew) == 1, (before, after)
        homes.setdefault(grew[0], file_id)
    assert len(homes) == 2, "the balancer never used both resources"
    return homes


def _each_resource(regions: tuple[Emulator, Emulator], make: Callable[[], _T]
                   ) -> Iterator[tuple[_T, int, tuple[int, int]]]:
    """`make()` again until each resource has answered one, 6 rounds at least (the
    balancer picks at random: bounded): what it made, the resource that made it (0:
    east, 1: west), and the requests each resource had then."""
    homes: set[int] = set()
    for round_ in range(40):
        if len(homes) == 2 and round_ >= 6:
            return
        before = _counts(regions)
        made = make()
        after = _counts(regions)
        home = 0 if after[0] > before[0] else 1
        homes.add(home)
        yield made, home, after
    pytest.fail("the balancer never used both resources")


def _batch(client: openai.OpenAI, file_id: str) -> Any:
    return client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h")


def test_a_batch_through_another_worker_goes_to_its_files_resource_and_is_judged_there(
        workers: tuple[openai.OpenAI, openai.OpenAI],
        regions: tuple[Emulator, Emulator]) -> None:
    one, other = workers
    homes = _uploaded_on_each(one, regions, _lines("gpt-4o-mini"))
    east = regions[0]
    # The file on east, the resource with a gpt-4o-mini deployment: the batch is made
    # there by the worker that never saw the upload (on main: 404 model_not_found, the
    # line judged on west too).
    before = _counts(regions)
    batch = _batch(other, homes[0])
    assert batch.status == "validating"
    assert _counts(regions) == (before[0] + 1, before[1])  # east alone took it
    assert east.last()["path"].endswith("/batches")
    assert east.last()["json"]["input_file_id"] == homes[0]
    # its line ran on east's gpt-4o-mini (the emulator runs a batch as it is read)
    done = other.batches.retrieve(batch.id)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 0)
    assert _counts(regions)[1] == before[1]  # west never saw the batch
    # The file on west, which has no gpt-4o-mini: the batch would fail there, refused
    # by either worker, and nothing is sent.
    for client in (other, one):
        before = _counts(regions)
        with pytest.raises(openai.NotFoundError) as refused:
            _batch(client, homes[1])
        assert refused.value.code == "model_not_found"
        assert _counts(regions) == before


def test_a_line_naming_a_disallowed_models_deployment_on_the_home_resource_is_refused(
        workers: tuple[openai.OpenAI, openai.OpenAI],
        regions: tuple[Emulator, Emulator]) -> None:
    """o3-mini is deployed on east, the file's resource, and the key may not use it:
    refused by the worker that saw the upload and by the other, and nothing is sent."""
    one, other = workers
    homes = _uploaded_on_each(one, regions, _lines("o3-mini"))
    for client in (one, other):
        for home in (0, 1):
            before = _counts(regions)
            with pytest.raises(openai.NotFoundError) as refused:
                _batch(client, homes[home])
            assert refused.value.code == "model_not_found"
            assert "o3-mini" in refused.value.body["message"]  # type: ignore[index]
            assert _counts(regions) == before


def test_a_stored_response_chained_through_another_worker_goes_to_its_resource(
        workers: tuple[openai.OpenAI, openai.OpenAI],
        regions: tuple[Emulator, Emulator]) -> None:
    """The same record routes any object: a response made through one worker, chained
    through the other, goes back to the resource that stored it (before, to either:
    Azure's 404 for a previous response it does not hold, half the time)."""
    one, other = workers
    for first, home, after in _each_resource(regions, lambda: one.responses.create(
            model="gpt-4o", input="Remember this")):
        chained = other.responses.create(model="gpt-4o", input="And now?",
                                         previous_response_id=first.id)
        assert chained.output_text
        assert _counts(regions)[1 - home] == after[1 - home]  # the other never saw it


def test_azures_native_batch_path_is_routed_and_judged_the_same(
        gateways: tuple[ServerThread, ServerThread, str],
        regions: tuple[Emulator, Emulator]) -> None:
    """`POST /openai/batches?api-version=...` (AzureOpenAI) through the other worker."""
    first, second, secret = gateways
    one = openai.OpenAI(base_url=first.url + "/v1", api_key=secret, max_retries=0, timeout=30)
    native = openai.AzureOpenAI(azure_endpoint=second.url, api_key=secret,
                                api_version="2024-10-21", max_retries=0, timeout=30)
    homes = _uploaded_on_each(one, regions, _lines("gpt-4o-mini"))
    before = _counts(regions)
    assert _batch(native, homes[0]).status == "validating"
    assert _counts(regions) == (before[0] + 1, before[1])
    assert regions[0].last()["path"] == "/openai/batches"
    with pytest.raises(openai.NotFoundError) as refused:
        _batch(native, homes[1])
    assert refused.value.code == "model_not_found"
    assert _counts(regions) == (before[0] + 1, before[1])


def test_a_chained_turn_on_another_model_runs_on_that_model_on_its_resource(
        workers: tuple[openai.OpenAI, openai.OpenAI],
        regions: tuple[Emulator, Emulator]) -> None:
    """A response made on east's gpt-4o, chained with `model: gpt-4o-mini` through
    either worker: east's gpt-4o-mini runs it, the model the client named, on the
    resource holding the response (on 87db8cd: east's gpt-4o, the deployment that made
    it, from every worker now that each learns it)."""
    one, other = workers
    east = regions[0]
    for _ in range(40):  # the balancer picks at random: until a response is on east
        before = _counts(regions)
        first = one.responses.create(model="gpt-4o", input="Remember this")
        if _counts(regions)[0] > before[0]:
            break
    else:
        pytest.fail("the balancer never used east")
    for client in (other, one):
        before = _counts(regions)
        chained = client.responses.create(model="gpt-4o-mini", input="And now?",
                                          previous_response_id=first.id)
        assert chained.output_text
        assert _counts(regions) == (before[0] + 1, before[1])
        assert east.last()["json"]["model"] == "gpt-4o-mini"


def test_a_streamed_response_chained_through_another_worker_goes_to_its_resource(
        gateways: tuple[ServerThread, ServerThread, str],
        regions: tuple[Emulator, Emulator]) -> None:
    """A streamed response's home is recorded with its owner too (claimed from the
    stream): chained through the other worker, it goes back to its resource (on
    87db8cd its record had no home: the other worker sent it wherever the balancer
    chose, half the time the resource that does not hold it)."""
    first, second, secret = gateways
    one, other = (openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0,
                                timeout=30) for gateway in (first, second))

    async def written() -> None:
        await first.app.gateway.owners.written()

    def streamed() -> str:
        with one.responses.create(model="gpt-4o", input="Remember this", stream=True) as stream:
            made = [event.response.id for event in stream if event.type == "response.created"]
        first.call(written)  # the claim is written in the background
        return made[0]

    for response_id, home, after in _each_resource(regions, streamed):
        chained = other.responses.create(model="gpt-4o", input="And now?",
                                         previous_response_id=response_id)
        assert chained.output_text
        assert _counts(regions)[1 - home] == after[1 - home]  # the other never saw it


def test_a_turn_naming_a_stored_item_through_another_worker_goes_to_its_resource(
        workers: tuple[openai.OpenAI, openai.OpenAI],
        regions: tuple[Emulator, Emulator]) -> None:
    """A response's output item, named by `item_reference` alone in a turn through the
    other worker: sent to the resource holding it (on 87db8cd its home was recorded
    and learnt, but routing read only `previous_response_id`-like fields: either)."""
    one, other = workers
    for first, home, after in _each_resource(regions, lambda: one.responses.create(
            model="gpt-4o", input="Remember this")):
        other.responses.create(model="gpt-4o", input=[
            {"type": "item_reference", "id": first.output[0].id}])  # type: ignore[list-item]
        assert _counts(regions)[1 - home] == after[1 - home]  # the other never saw it
