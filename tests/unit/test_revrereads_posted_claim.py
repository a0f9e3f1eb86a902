"""A background response's own stream (`POST responses`, `stream: true`) that showed
Azure's usage counts it only when no read counted it first: it claims the response in
the governance database (`OwnerStore.claim_counted`, one transaction), as a read does.
Was: it marked it counted whole in memory and noted that in the database in the
background, unconditionally: a read on another worker that claimed the completed
response before that note was written counted Azure's usage as well (twice in all).
Real SQLite: the other worker's read is its claim on another connection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ownership import OwnerStore

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}
BODY = {"model": "gpt-4o", "input": "hello", "background": True, "stream": True}


def _posted(response_id: str) -> RequestRecord:
    record = RequestRecord("posted", "POST")
    record.stream, record.usage, record.created_id = True, dict(AZURE), response_id
    return record


def _stream_ended(owners: ObjectOwners, record: RequestRecord) -> None:
    async def run() -> None:
        stream: Any = object()  # a stream, relayed (not an Answer)
        await owned_answer(owners, "POST", "responses", "key-a", record, stream, None, BODY)
        await owners.written()

    asyncio.run(run())


def test_a_stream_ending_after_another_workers_read_counts_nothing(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    other = OwnerStore.open(database)  # another worker's read of the completed response
    try:
        assert other.claim_counted("resp_1", 1.0) is None  # it counted Azure's usage
    finally:
        other.close()
    owners = ObjectOwners(database=database)
    posted = _posted("resp_1")
    _stream_ended(owners, posted)
    owners.close()
    assert posted.usage is None  # rereads: Azure's usage again


def test_a_stream_ending_first_counts_it_and_claims_it(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    owners = ObjectOwners(database=database)
    posted = _posted("resp_2")
    _stream_ended(owners, posted)
    owners.close()
    assert posted.usage == AZURE
    other = OwnerStore.open(database)  # a read on another worker afterwards
    try:
        assert other.claim_counted("resp_2", 2.0) == (True, 0, 0, -1)  # drops its usage
    finally:
        other.close()
