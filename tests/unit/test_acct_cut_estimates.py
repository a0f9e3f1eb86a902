"""A background response's `POST` whose stream ended before Azure's usage counted it at
an estimate; the first read (or resumed stream) that shows Azure's usage counts the rest
(`CountedUsage.answered`, gateway/rereads.py): each count less the estimates', none below
0, a detail (cached, reasoning) at most its count, the total their sum. The e2e side:
tests/e2e/test_acct_background_cut.py."""

from __future__ import annotations

from typing import Any

import orjson

from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.observability.record import RequestRecord

AZURE = {"input_tokens": 40, "output_tokens": 30, "total_tokens": 70,
         "input_tokens_details": {"cached_tokens": 32},
         "output_tokens_details": {"reasoning_tokens": 25}}
BODY = {"model": "gpt-4o", "input": "hi", "background": True, "stream": True}


def _posted(counted: CountedUsage, usage: dict[str, Any] | None,
            body: dict[str, Any] = BODY, response_id: str | None = "resp_1") -> RequestRecord:
    record = RequestRecord("p", "POST")
    record.stream, record.usage, record.created_id = True, usage, response_id
    counted.answered("POST", "responses", record, None, body)
    return record


def _read(counted: CountedUsage, usage: dict[str, Any] = AZURE) -> dict[str, Any] | None:
    record = RequestRecord("r", "GET")
    record.usage = dict(usage)
    answer = {"id": "resp_1", "object": "response", "background": True, "usage": usage}
    counted.answered("GET", "responses/resp_1", record, orjson.dumps(answer), None)
    return record.usage


def _estimate(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "estimated": True}


def test_a_read_after_a_cut_stream_counts_azures_usage_less_the_estimate() -> None:
    counted = CountedUsage()
    _posted(counted, _estimate(12, 8))
    assert _read(counted) == {
        "input_tokens": 28, "output_tokens": 22, "total_tokens": 50,
        "input_tokens_details": {"cached_tokens": 28},  # at most the input left
        "output_tokens_details": {"reasoning_tokens": 22}}
    assert _read(counted) is None  # counted


def test_an_estimate_over_azures_counts_leaves_none_below_zero() -> None:
    counted = CountedUsage()
    _posted(counted, _estimate(60, 2))
    assert _read(counted) == {
        "input_tokens": 0, "output_tokens": 28, "total_tokens": 28,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 25}}


def test_the_estimate_left_out_is_the_one_counted_when_the_post_ended() -> None:
    """What the record held when `answered` ran is what the metrics and the access log
    count (its handler ends right after). Were a relay's task to write more into it
    after (what it relayed), a read still leaves out only that: the relayed output is
    then counted twice by the ledger's later look at worst, never by nothing (tests/unit/
    test_revacct_counted_estimates.py)."""
    counted = CountedUsage()
    record = _posted(counted, _estimate(12, 0))
    record.usage = _estimate(12, 5)  # a relay's task, after
    assert _read(counted)["output_tokens"] == 30  # type: ignore[index]


def test_resumed_streams_cut_again_add_their_estimates() -> None:
    counted = CountedUsage()
    _posted(counted, _estimate(12, 8))
    resumed = RequestRecord("g", "GET")
    resumed.stream, resumed.usage = True, _estimate(0, 4)
    counted.answered("GET", "responses/resp_1", resumed, None, None)
    assert resumed.usage == _estimate(0, 4)  # what it relayed: counted
    assert _read(counted, {"input_tokens": 40, "output_tokens": 30}) == {
        "input_tokens": 28, "output_tokens": 18}


def test_a_stream_that_showed_azures_usage_counts_no_read() -> None:
    counted = CountedUsage()
    _posted(counted, dict(AZURE))
    assert _read(counted) is None


def test_only_a_background_responses_stream_with_its_id_is_noted() -> None:
    counted = CountedUsage()
    _posted(counted, _estimate(12, 8), body={**BODY, "background": False})
    _posted(counted, _estimate(12, 8), response_id=None)
    assert _read(counted) == AZURE  # neither noted: the read counts Azure's whole
