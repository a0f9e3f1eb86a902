"""A virtual key's client leaving a background Responses stream at its end, after
`response.completed` showed Azure's usage (gateway/pipeline.py's `left`): its claim of
that usage was made in the background and its record kept the usage whatever the claim
found, so a read on another worker claiming first meanwhile counted it too: twice. Now
the claim is awaited (`CountedUsage.gone`, as a read's is): counted once, by whichever
claim committed first.

The gateway in-process (`create_app`, its key store and owners on a real SQLite file)
over an upstream function; another `ObjectOwners` on the same file is the other
worker. The gateway's owners' thread is held (a job that waits) until the other
worker's read has claimed: the order that made the double count."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.http.interface import Answer, ClientDisconnected
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamResponse
from tests.unit.test_governed_usual import Clock, _Request

AZURE = {"input_tokens": 50, "output_tokens": 30, "total_tokens": 80}
_RESPONSE = {"id": "resp_1", "object": "response", "background": True, "model": "gpt-4o"}
_EVENTS = [
    {"type": "response.created", "sequence_number": 0,
     "response": {**_RESPONSE, "status": "queued"}},
    {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
     "output_index": 0, "content_index": 0, "delta": "Hi"},
    {"type": "response.completed", "sequence_number": 2,
     "response": {**_RESPONSE, "status": "completed", "usage": AZURE}},
]


class _Stream:
    status = 200
    headers: Mapping[str, str] = {"content-type": "text/event-stream"}

    async def read(self, limit: int) -> bytes:
        raise AssertionError("a stream")

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        for event in _EVENTS:
            yield b"event: %s\ndata: %s\n\n" % (str(event["type"]).encode(),
                                                 orjson.dumps(event))

    def close(self) -> None:
        pass

    def finish_in_background(self) -> None:
        pass


class _Azure:
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return _Stream()

    def connections_in_use(self) -> int:
        return 0

    async def close(self) -> None:
        pass


class _LeavingAtTheEnd(_Request):
    """A client that reads every event and is gone when the stream ends."""

    def stream(self, status: int, headers: Mapping[str, str]) -> Any:
        return self

    async def write(self, data: bytes) -> None:
        pass

    async def end(self, tail: bytes = b"") -> None:
        raise ClientDisconnected("the client left at the stream's end")


def _settings(directory: Path) -> Settings:
    """One deployment, its api-version the gateway's choice (one that serves Responses)."""
    return load_settings({
        "database": f"sqlite:///{directory}/gateway.db", "log_level": "warning",
        "deployment_config": [{"deployment_name": "gpt-4o", "model_name": "gpt-4o",
                               "endpoint": "http://127.0.0.1:9/", "api_key": "azure-key"}],
    }, {})


async def _read_on_the_other_worker(other: ObjectOwners) -> Any:
    record = RequestRecord("read", "GET")
    record.usage = dict(AZURE)
    answer = orjson.dumps({**_RESPONSE, "status": "completed", "usage": AZURE})
    await owned_answer(other, "GET", "responses/resp_1", "key-a", record,
                       Answer(200, {}, answer), None)
    return record.usage


async def test_a_background_stream_left_at_its_end_is_counted_once(tmp_path: Path) -> None:
    from azure_openai_proxy.gateway.app import create_app

    clock = Clock()
    store = KeyStore.open(tmp_path / "gateway.db")
    _, secret = store.create_key("k", limits=Limits(rpm=50, tpm=100_000), now=clock.now)
    app = create_app(_settings(tmp_path), _Azure(), clock=clock)  # type: ignore[arg-type]
    await app.startup()
    owners, other = app.gateway.owners, ObjectOwners(database=tmp_path / "gateway.db")
    try:
        await owners.get("warm")  # its thread made
        await other.get("warm")
        held, go = threading.Event(), threading.Event()
        assert owners._thread is not None
        owners._thread.submit(lambda: (held.set(), go.wait(10)))  # the owners' thread busy
        assert held.wait(10)
        body = orjson.dumps({"model": "gpt-4o", "input": "hi", "stream": True,
                             "background": True})
        request = _LeavingAtTheEnd(secret, body)
        request.target = "/v1/responses"
        record = app.gateway.new_record("POST")
        handler = asyncio.ensure_future(app.gateway.handle(request, record))
        for _ in range(2000):  # until the stream's end raised (and its claim is queued)
            if record.usage is not None and not record.usage.get("estimated") and (
                    handler.done() or record.created_id is not None):
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert record.created_id == "resp_1" and record.usage == AZURE
        # The other worker reads the completed response: its claim commits first.
        assert await _read_on_the_other_worker(other) == AZURE
        go.set()
        with pytest.raises(ClientDisconnected):
            await handler
        # main: AZURE here too (its claim found the response counted, and was ignored)
        assert record.usage is None
        assert await _read_on_the_other_worker(other) is None  # and no read counts it again
    finally:
        go.set()
        await owners.written()
        await app.cleanup()
        other.close()
        store.close()
