"""`CountedUsage`: which reads of a stored object count its usage (gateway/rereads.py)."""

from __future__ import annotations

import orjson

from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.observability.record import RequestRecord

USAGE = {"input_tokens": 5, "output_tokens": 7}


def _read(counted: CountedUsage, operation: str, answer: dict[str, object]) -> object:
    record = RequestRecord("r", "GET")
    record.usage = dict(USAGE)
    counted.reread(operation, record, orjson.dumps({**answer, "usage": USAGE}))
    return record.usage


def test_a_foreground_response_read_back_counts_nothing() -> None:
    counted = CountedUsage()
    assert _read(counted, "responses/resp_1", {"background": False}) is None
    assert _read(counted, "responses/resp_1", {}) is None


def test_a_background_response_or_a_run_counts_at_its_first_read_alone() -> None:
    counted = CountedUsage()
    assert _read(counted, "responses/resp_2", {"background": True}) == USAGE
    assert _read(counted, "responses/resp_2", {"background": True}) is None
    assert _read(counted, "threads/t/runs/run_1", {}) == USAGE
    assert _read(counted, "threads/t/runs/run_1", {}) is None
    assert _read(counted, "threads/t/runs/run_2", {}) == USAGE  # another run counts


def test_other_reads_keep_their_usage() -> None:
    counted = CountedUsage()
    for operation in ("responses/resp_3/input_items", "threads/t/runs", "files/f"):
        assert _read(counted, operation, {}) == USAGE
