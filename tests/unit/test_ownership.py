"""Object ownership: pure parts (gateway/ownership.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from azure_openai_proxy.gateway.ownership import (
    ObjectNotFound,
    ObjectOwners,
    Owned,
    batch_file_models,
    filter_list,
    object_ids,
)


def test_a_known_owner_is_the_only_one_let_through() -> None:
    owners = ObjectOwners(capacity=2)
    owners.remember("file-a", Owned("key-a"))
    owners.remember("file-a", Owned("key-b"))  # an owned object keeps its owner
    owners.check(["file-a"], "key-a", restricted=True)
    with pytest.raises(ObjectNotFound):
        owners.check(["file-a"], "key-b", restricted=False)
    owners.check(["file-x"], "key-b", restricted=False)  # unknown: only unrestricted
    with pytest.raises(ObjectNotFound):
        owners.check(["file-x"], "key-b", restricted=True)
    owners.remember("file-b", Owned("key-a"))
    owners.remember("file-c", Owned("key-a"))
    assert len(owners) == 2 and owners.get("file-a") is None  # bounded


def test_the_ids_a_request_names() -> None:
    assert object_ids("files/file-1/content", None) == ["file-1"]
    assert object_ids("batches", {"input_file_id": "file-2"}) == ["file-2"]
    assert object_ids("threads/runs", {"assistant_id": "asst-1"}) == ["asst-1"]
    assert object_ids("fine_tuning/jobs/ftjob-1/cancel", None) == ["ftjob-1"]
    assert object_ids("fine_tuning/jobs", {"training_file": "x"}) == []
    assert object_ids("files", None) == []


def test_a_list_keeps_only_the_owned_objects() -> None:
    raw = orjson.dumps({"object": "list", "data": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
                        "first_id": "a", "last_id": "c", "has_more": False})
    kept = orjson.loads(filter_list(raw, lambda i: i in ("b", "c")) or b"")
    assert [x["id"] for x in kept["data"]] == ["b", "c"]
    assert (kept["first_id"], kept["last_id"]) == ("b", "c")
    assert filter_list(b'{"id": "x"}', lambda i: True) is None
    assert filter_list(b"not json", lambda i: True) is None


def _form(content: bytes) -> bytes:
    return (b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\n"
            b"Content-Type: application/jsonl\r\n\r\n" + content + b"\r\n--B--\r\n")


def _models(form: bytes) -> frozenset[str] | None:
    async def chunks() -> AsyncIterator[bytes]:
        yield form[:10]
        yield form[10:]

    return asyncio.run(batch_file_models(chunks(), b"B"))


def test_the_models_of_a_batch_file() -> None:
    lines = b'{"body": {"model": "gpt-4o"}}\n\n{"body": {"model": "o3-mini"}}\n'
    assert _models(_form(lines)) == frozenset({"gpt-4o", "o3-mini"})
    assert _models(_form(b'{"body": {}}\n')) is None  # a line without a model
    assert _models(_form(b"{not json\n")) is None
    assert _models(b"--B--\r\n") is None  # no file part
