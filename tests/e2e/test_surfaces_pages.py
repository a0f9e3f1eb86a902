"""A key's list of its own objects, paged through the gateway: Azure pages a resource's
objects of every key together, and the gateway keeps only the key's own on each page. A
page holding none of them must not end the key's listing (the openai SDK stops paging at
an empty page, whatever `has_more` says, and it pages from the last item it was shown).
The official `openai` SDK through the gateway to the emulator, which pages batches as
Azure does."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.gateway.ownedpages import MORE_PAGES
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.e2e.test_virtual_keys import HELLO, Governed, governed_gateway
from tests.support import ServerThread


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def _batch(client: openai.OpenAI) -> str:
    line = json.dumps({"custom_id": "1", "method": "POST", "url": "/chat/completions",
                       "body": {"model": "gpt-4o", "messages": HELLO}})
    uploaded = client.files.create(
        file=("batch.jsonl", io.BytesIO(line.encode() + b"\n"), "application/jsonl"),
        purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def test_the_emulator_pages_batches_as_azure_does(emulator: Emulator) -> None:
    azure = openai.OpenAI(base_url=emulator.url + "/openai/v1", api_key=AZURE_KEY,
                          max_retries=0)
    made = [_batch(azure) for _ in range(3)]
    first = azure.batches.list(limit=2)
    assert [b.id for b in first.data] == made[:0:-1]  # newest first
    assert first.has_more is True
    assert [b.id for b in azure.batches.list(limit=2, after=made[1]).data] == made[:1]
    assert [b.id for b in azure.batches.list(limit=2)] == made[::-1]  # the SDK pages on
    with pytest.raises(openai.BadRequestError):
        azure.batches.list(limit=0)


def test_pages_of_other_keys_objects_do_not_end_a_keys_listing(governed: Governed) -> None:
    a = governed.client(governed.key("a")[1])
    b = governed.client(governed.key("b")[1])
    mine = _batch(a)
    theirs = [_batch(b) for _ in range(5)]  # newer: Azure lists them first
    assert [x.id for x in a.batches.list(limit=2)] == [mine]  # auto-paged by the SDK
    page = a.batches.list(limit=2)
    assert [x.id for x in page.data] == [mine]
    assert page.has_more is False
    assert [x.id for x in b.batches.list(limit=2)] == theirs[::-1]
    assert [x.id for x in b.batches.list(limit=10).data] == theirs[::-1]


def test_a_page_is_asked_again_a_bounded_number_of_times(
        governed: Governed, emulator: Emulator) -> None:
    a = governed.client(governed.key("a")[1])
    b = governed.client(governed.key("b")[1])
    mine = _batch(a)
    for _ in range(12):
        _batch(b)
    before = len(emulator.requests())
    page = a.batches.list(limit=1)
    asked = [r for r in emulator.requests()[before:] if r["path"].endswith("/batches")]
    assert len(asked) == 1 + MORE_PAGES  # the client's page, then MORE_PAGES more
    assert page.data == []
    assert page.has_more is True
    cursor = page.last_id  # type: ignore[attr-defined]  # Azure's last: go on from it
    assert cursor and all(r["query_params"]["limit"] == ["1"] for r in asked)
    assert [x.id for x in a.batches.list(limit=1, after=cursor).data] == [mine]
