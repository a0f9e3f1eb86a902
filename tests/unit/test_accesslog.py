"""AccessLog: queued records become JSON lines when written out, in order, with the time
each request finished; no prompt and no key is ever part of a record."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from azure_openai_proxy.observability.accesslog import AccessLog, configure_logging
from azure_openai_proxy.observability.record import RequestRecord


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging() sets the package logger; put it back as it was."""
    root = logging.getLogger("azure_openai_proxy")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved


def record(n: int, **extra: object) -> RequestRecord:
    return RequestRecord(f"id{n}", "POST", route="chat/completions", model="gpt-4o",
                         deployment="dep", endpoint="https://x.example.com/", status=200,
                         attempts=1, upstream_ms=1.234, total_ms=2.345, **extra)  # type: ignore[arg-type]


async def test_lines_are_written_in_order_with_their_finish_time() -> None:
    configure_logging("info")
    stream = io.BytesIO()
    log = AccessLog(stream, flush_interval=60)
    log.write(record(1, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                               "completion_tokens_details": {"reasoning_tokens": 0}}))
    log.write(record(2, error="UpstreamTimeout", retries=["dep:timeout"]))
    assert stream.getvalue() == b""  # queued, not formatted yet
    log.flush()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["id1", "id2"]
    assert lines[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert lines[0]["upstream_ms"] == 1.23 and lines[0]["total_ms"] == 2.35
    assert "endpoint" not in lines[0] and "error" not in lines[0]
    assert lines[1]["error"] == "UpstreamTimeout" and lines[1]["retries"] == ["dep:timeout"]
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])


async def test_a_full_queue_is_written_without_waiting_for_the_timer() -> None:
    configure_logging("info")
    stream = io.BytesIO()
    log = AccessLog(stream, flush_interval=60, max_pending=3)
    for n in range(7):
        log.write(record(n))
    assert len(stream.getvalue().splitlines()) == 6  # two full queues so far
    log.flush()
    assert [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        f"id{n}" for n in range(7)
    ]


async def test_nothing_is_queued_below_info() -> None:
    configure_logging("warning")
    stream = io.BytesIO()
    log = AccessLog(stream, flush_interval=60)
    log.write(record(1))
    log.flush()
    assert stream.getvalue() == b""


async def test_a_value_orjson_cannot_write_is_logged_anyway_and_the_queue_goes_on() -> None:
    configure_logging("info")
    stream = io.BytesIO()
    log = AccessLog(stream, flush_interval=60)
    odd = record(1, usage={"prompt_tokens": 2**70})
    odd.model = "caf\udce9"  # a lone surrogate
    log.write(odd)
    log.write(record(2))
    log.flush()
    log.write(record(3))
    log.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["id1", "id2", "id3"]
    assert lines[0]["usage"] == {"prompt_tokens": 2**70} and lines[0]["model"] == "caf\udce9"


async def test_the_flush_timer_looks_the_loop_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # `asyncio.get_running_loop()` is a getpid() system call on 3.11, and a quiet worker
    # arms the timer for most of its requests (issue 15).
    import asyncio

    configure_logging("info")
    lookups: list[None] = []
    running = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        lookups.append(None)
        return running()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    stream = io.BytesIO()
    log = AccessLog(stream, flush_interval=60)
    for n in range(3):
        log.write(record(n))  # arms the timer
        log.flush()  # as the timer would: the next write arms it again
    assert len(stream.getvalue().splitlines()) == 3
    assert len(lookups) == 1


def test_the_timer_is_armed_on_the_running_loop_when_the_kept_one_stopped() -> None:
    """The loop kept from the last timer has stopped (not closed): a timer armed on it
    would never fire, and the lines would wait for a full queue."""
    configure_logging("info")

    class Written(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.event: asyncio.Event | None = None

        def flush(self) -> None:
            if self.event is not None and self.getvalue():
                self.event.set()

    stream = Written()
    log = AccessLog(stream, flush_interval=0.001)

    async def written(n: int) -> None:
        stream.event = asyncio.Event()
        log.write(record(n))
        await asyncio.wait_for(stream.event.wait(), 2.0)  # the timer's flush, not a full queue

    first = asyncio.new_event_loop()
    second = asyncio.new_event_loop()
    try:
        first.run_until_complete(written(1))
        second.run_until_complete(written(2))
    finally:
        first.close()
        second.close()
    assert [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        "id1", "id2"]
