"""A background response's stream resumed (`GET responses/{id}?stream=true`) is a read
of it (`CountedUsage.restreamed`, through `owned_answer` for a stream reply): Azure's
usage at its end counts the response once; an estimate (a resumed stream left again)
counts its part, which the later count leaves out."""

from __future__ import annotations

import asyncio

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.observability.record import RequestRecord
from tests.unit.test_revsurf_rereads import USAGE, _reread

ESTIMATE = {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3, "estimated": True}


def _restreamed(counted: CountedUsage, operation: str, usage: dict[str, object]) -> object:
    record = RequestRecord("s", "GET")
    record.stream, record.usage = True, dict(usage)
    counted.restreamed(operation, record)
    return record.usage


def test_a_resumed_stream_counts_a_response_once_with_its_reads() -> None:
    counted = CountedUsage()
    assert _restreamed(counted, "responses/resp_1", ESTIMATE) == ESTIMATE  # left again
    # the first to show it counts what the estimate did not (test_acct_cut_estimates.py)
    assert _restreamed(counted, "responses/resp_1", USAGE) == {"input_tokens": 5,
                                                              "output_tokens": 4}
    assert _restreamed(counted, "responses/resp_1", USAGE) is None
    assert _reread(counted, "responses/resp_1") is None
    assert _reread(counted, "responses/resp_2") == USAGE  # read first
    assert _restreamed(counted, "responses/resp_2", USAGE) is None
    assert _restreamed(counted, "responses/resp_2", ESTIMATE) is None
    assert _restreamed(counted, "responses/resp_3/input_items", USAGE) == USAGE  # no stream


def test_owned_answer_hands_a_read_stream_to_restreamed() -> None:
    async def scenario() -> tuple[object, object]:
        owners = ObjectOwners()
        usages = []
        for _ in range(2):
            record = RequestRecord("s", "GET")
            record.stream, record.usage = True, dict(USAGE)
            await owned_answer(owners, "GET", "responses/resp_9", "key-a", record,
                               object(), None)  # type: ignore[arg-type]  # (a stream: no Answer)
            usages.append(record.usage)
        return usages[0], usages[1]

    assert asyncio.run(scenario()) == (USAGE, None)  # main: counted twice
