"""A static key's resumed Responses stream (`CountedSend`) is counted after it was relayed:
`recall` awaited the database first, the stream's end already with the client. A client
that then closes its connection (httpx.get does) cancelled the handler there, and
`answered` never ran: the stream's count was lost, and a read right after counted the
output again (tests/e2e/test_acctleft_resumed_replay.py's static key: 28 tokens for 25,
3 runs of 4 here on main). Now a resumed stream's estimate asks the database nothing
(an estimate only adds to what is noted), and a cancelled recall still counts. Real
SQLite (`ObjectOwners`); the owners' database thread held busy by the test."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from azure_openai_proxy.gateway.ownership import ObjectOwners
from azure_openai_proxy.gateway.rereads import CountedSend
from azure_openai_proxy.observability.record import RequestRecord

AZURE = {"input_tokens": 4, "output_tokens": 16, "total_tokens": 20}


def _resumed(owners: ObjectOwners, usage: dict[str, Any]) -> tuple[CountedSend, Any]:
    """A CountedSend whose send relays a resumed stream recorded with `usage`, and
    the call's arguments (a GET responses/resp_1)."""

    async def send(request: Any, target: Any, caller: Any, body: Any,
                   record: RequestRecord, routed: Any) -> Any:
        record.stream, record.usage = True, dict(usage)
        return object()  # a stream, relayed (not an Answer)

    # No `stream=true` in its query: the database's look-up before a resumed stream is
    # sent (`replaying`, bounded) is not what these test (tests/e2e/test_rereads_*.py)
    args = (SimpleNamespace(method="GET", query_string=""),
            SimpleNamespace(operation="responses/resp_1"),
            None, SimpleNamespace(json=None), RequestRecord("resumed", "GET"), None)
    return CountedSend(cast(Any, send), owners.counted), args


def _read_usage(owners: ObjectOwners) -> object:
    """What a read of the response showing Azure's usage counts (None: nothing)."""
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    owners.counted.answered("GET", "responses/resp_1", record,
                            b'{"id": "resp_1", "background": true}', None)
    return record.usage


def _busy(owners: ObjectOwners, gate: threading.Event) -> asyncio.Task[object]:
    """The owners' database thread held until `gate` is set (bounded: 10 s)."""
    return asyncio.ensure_future(owners._call(lambda store: gate.wait(10)))


def test_a_resumed_streams_estimate_is_counted_without_waiting_for_the_database(
        tmp_path: Path) -> None:
    owners = ObjectOwners(database=tmp_path / "gateway.db")
    estimate = {"prompt_tokens": 0, "completion_tokens": 12, "total_tokens": 12,
                "estimated": True}

    async def run() -> object:
        gate = threading.Event()
        held = _busy(owners, gate)
        sender, args = _resumed(owners, estimate)
        sending = asyncio.ensure_future(sender.send(*args))
        for _ in range(20):
            await asyncio.sleep(0)
        done = sending.done()  # main: waiting for the database, the stream long sent
        usage = _read_usage(owners)
        gate.set()
        await held
        await asyncio.wait_for(sending, 10)
        await owners.written()
        assert done
        return usage

    usage = asyncio.run(run())
    owners.close()
    assert usage == {"input_tokens": 4, "output_tokens": 4, "total_tokens": 8}


def test_a_resumed_stream_whose_client_left_during_the_recall_is_counted(
        tmp_path: Path) -> None:
    owners = ObjectOwners(database=tmp_path / "gateway.db")

    async def run() -> object:
        gate = threading.Event()
        held = _busy(owners, gate)
        sender, args = _resumed(owners, AZURE)  # the stream showed Azure's usage
        sending = asyncio.ensure_future(sender.send(*args))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not sending.done()  # in its recall, the database busy
        sending.cancel()  # its client closed the connection
        for _ in range(5):
            await asyncio.sleep(0)
        usage = _read_usage(owners)
        gate.set()
        await held
        await owners.written()
        return usage

    usage = asyncio.run(run())
    owners.close()
    assert usage is None  # main: AZURE, counted a second time
