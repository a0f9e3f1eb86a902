"""When the governance database does not tell an object's owner (it failed, or kept
the look-up past its bound), a virtual key's list and a batch made from a file are
answered as the ownership check answers a restricted key's read: a retryable 503
`service_unavailable`, never another key's object shown, never the key's own left out
as if gone, never a refusal of a file that may be the key's (gateway/ownership.py
`owned_of`, `owner`; gateway/batchcheck.py). Was: the list answered 200 without the
objects memory did not know (an empty page for a key whose objects another worker
made), and the batch 403 `batch_not_allowed`.

Real SQLite made to fail (a plain file where its folder should be), or held busy by a
look-up queued in the owners' one thread (as writes queued behind another process's
write lock hold it)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import OwnersUnavailable
from azure_openai_proxy.gateway.batchcheck import check_resource_post
from azure_openai_proxy.gateway.ownership import ObjectOwners, Owned, owned_answer
from azure_openai_proxy.governance.model import VirtualKey
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord


def _failing(tmp_path: Path) -> ObjectOwners:
    blocker = tmp_path / "folder"
    blocker.write_text("not a folder")
    return ObjectOwners(database=blocker / "gw.db")


def _files(*ids: str) -> Answer:
    return Answer(200, {}, orjson.dumps({"object": "list", "has_more": False, "data": [
        {"id": object_id, "object": "file", "purpose": "batch"} for object_id in ids]}))


async def _listed(owners: ObjectOwners, answer: Answer) -> Any:
    record = RequestRecord("list", "GET")
    reply = await owned_answer(owners, "GET", "files", "key-a", record, answer, None)
    assert isinstance(reply, Answer)
    return [item["id"] for item in orjson.loads(reply.body)["data"]]


def test_a_list_the_failing_database_cannot_filter_is_retryable(tmp_path: Path) -> None:
    owners = _failing(tmp_path)

    async def scenario() -> Any:
        await owners.remember("file-mine", Owned("key-a"))  # memory knows it
        known = await _listed(owners, _files("file-mine"))  # memory alone decides
        with pytest.raises(OwnersUnavailable) as refused:  # main: [] (200)
            await _listed(owners, _files("file-mine", "file-made-elsewhere"))
        return known, refused.value

    known, refused = asyncio.run(scenario())
    owners.close()
    assert known == ["file-mine"]
    assert refused.status == 503 and refused.code == "service_unavailable"
    assert "file-made-elsewhere" not in refused.message  # no id of the list named


def test_a_list_the_database_keeps_waiting_is_retryable(tmp_path: Path) -> None:
    owners = ObjectOwners(database=tmp_path / "gw.db")

    async def scenario() -> None:
        await owners.get("warm")  # its store opened
        gate = threading.Event()
        held = asyncio.ensure_future(owners._call(lambda store: gate.wait(10)))
        try:
            with pytest.raises(OwnersUnavailable):  # after 1 s; main: [] (200)
                await _listed(owners, _files("file-made-elsewhere"))
        finally:
            gate.set()
            await held

    asyncio.run(scenario())
    owners.close()


def test_a_batch_from_a_file_whose_owner_is_not_read_is_retryable(tmp_path: Path) -> None:
    owners = _failing(tmp_path)
    key = VirtualKey("key-a", "a", "0" * 64, "sk-aop-a", models=("gpt-4o",))
    body = {"input_file_id": "file-made-elsewhere", "endpoint": "/chat/completions",
            "completion_window": "24h"}

    async def scenario() -> None:
        await check_resource_post(owners, cast(Any, None), Caller(None, key, budgeted=False),
                                  body, "batches", cast(Any, None))

    with pytest.raises(OwnersUnavailable):  # main: BatchNotAllowed (403)
        asyncio.run(scenario())
    owners.close()
