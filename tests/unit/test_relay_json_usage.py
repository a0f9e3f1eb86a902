"""The usage of a JSON answer for an operation whose body is not normalized (batches,
files, vector stores...): read when the body names `usage`, left None when it does not
(gateway/relay.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import orjson

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord


class _JsonAnswer:
    """Azure's whole JSON answer, read at once."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status = status
        self.headers: Mapping[str, str] = {"content-type": "application/json"}
        self.body = body
        self.closed = False

    async def read(self, limit: int) -> bytes:
        return self.body

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        yield self.body

    def close(self) -> None:
        self.closed = True

    def finish_in_background(self) -> None:
        self.closed = True


class _Request:
    def stream(self, status: int, headers: Mapping[str, str]) -> None:
        raise AssertionError("a JSON answer is not streamed")


async def _relayed(operation: str, answer: object) -> tuple[RequestRecord, Answer]:
    record = RequestRecord("req-1", "GET")
    body = orjson.dumps(answer)
    upstream = _JsonAnswer(body)
    reply = await relay(_Request(), operation, upstream, None, None, True,  # type: ignore[arg-type]
                        record)
    assert isinstance(reply, Answer) and reply.body == body and upstream.closed
    return record, reply


async def test_the_usage_an_answer_names_is_recorded() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    record, _ = await _relayed("threads/runs", {"id": "run_1", "object": "thread.run",
                                                "usage": usage})
    assert record.usage == usage


async def test_an_answer_without_usage_records_none() -> None:
    record, _ = await _relayed("files", {"object": "list", "data": [
        {"id": "file-1", "object": "file", "purpose": "batch", "filename": "usage.jsonl"}]})
    assert record.usage is None


async def test_usage_named_only_inside_a_string_records_none() -> None:
    record, _ = await _relayed("files", {"id": "file-1", "filename": '"usage"'})
    assert record.usage is None


async def test_a_usage_that_is_not_an_object_records_none() -> None:
    record, _ = await _relayed("batches", {"id": "batch_1", "usage": None})
    assert record.usage is None
