"""What `CountedUsage` keeps of a background response's cut streams (gateway/rereads.py):
two numbers per id, the (prompt, completion) tokens their estimates counted, taken when
each request was answered, not the requests' records.

Was (branch acct): the records themselves, in a list per id that each resumed stream
cut again grew by one, kept until the id left the 16,384-id table (a hot id never
does): a key resuming one response and leaving it, again and again, grew the worker's
memory by a record and its usage at every request. And the estimate was read from the
record when the read came, so one written into it after its handler ended (after the
metrics counted it) was left out of the read though the metrics never counted it."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.observability.record import RequestRecord

BODY = {"model": "gpt-4o", "input": "hi", "background": True, "stream": True}


def _estimate(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "estimated": True}


def _cut_post(counted: CountedUsage) -> None:
    record = RequestRecord("p", "POST")
    record.stream, record.usage, record.created_id = True, _estimate(12, 8), "resp_1"
    counted.answered("POST", "responses", record, None, BODY)


def _resumed_and_left(counted: CountedUsage, times: int) -> None:
    for _ in range(times):
        resumed = RequestRecord("g", "GET")
        resumed.stream, resumed.usage = True, _estimate(0, 1)
        counted.answered("GET", "responses/resp_1", resumed, None, None)


def test_resumed_streams_cut_again_and_again_keep_no_records() -> None:
    counted = CountedUsage()
    _cut_post(counted)
    _resumed_and_left(counted, 10)  # the table's entry made, its sums in place
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _resumed_and_left(counted, 5_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # acct: each resumed record kept (about 1 MB for 5,000); now two ints, replaced
    assert grown < 20_000, grown
    read = RequestRecord("r", "GET")
    read.usage = {"input_tokens": 40, "output_tokens": 6_000}
    answer = {"id": "resp_1", "object": "response", "background": True, "usage": read.usage}
    counted.answered("GET", "responses/resp_1", read, orjson.dumps(answer), None)
    # what the 5,011 estimates counted is still left out: 12 prompt, 8 + 5,010 output
    assert read.usage == {"input_tokens": 28, "output_tokens": 6_000 - 8 - 5_010}


def test_a_posts_record_is_not_kept_by_the_table() -> None:
    counted = CountedUsage()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2_000):  # as many cut background streams, each its own id
            record = RequestRecord("p", "POST", route="responses", model="gpt-4o")
            record.stream, record.created_id = True, f"resp_{n:06d}"
            record.usage = _estimate(12, 8)
            record.retries.append("429")
            counted.answered("POST", "responses", record, None, BODY)
        del record
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # the ids and two small ints each (~150 bytes an entry); acct kept each record too
    assert grown < 2_000 * 400, grown
