"""An Assistants run step (`GET threads/{t}/runs/{r}/steps/{step}`) answers with the usage
of that step, which is part of its run's usage: the run's is counted once, at the first
read of the run that shows it (gateway/rereads.py), so a step's read counts nothing,
whichever key reads it and however often. Was: each read of a step counted its usage
again. Azure's shapes (the Assistants API's `thread.run.step` and `thread.run`), through
`owned_answer` (a virtual key's) and `CountedUsage.answered` (a static key's)."""

from __future__ import annotations

import asyncio

import orjson

from azure_openai_proxy.gateway.ownership import ObjectOwners, owned_answer
from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.observability.record import RequestRecord

STEP_USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
RUN_USAGE = {"prompt_tokens": 250, "completion_tokens": 60, "total_tokens": 310}
STEP = {"id": "step_1", "object": "thread.run.step", "created_at": 1733600000,
        "run_id": "run_1", "assistant_id": "asst_1", "thread_id": "thread_1",
        "type": "message_creation", "status": "completed",
        "step_details": {"type": "message_creation",
                         "message_creation": {"message_id": "msg_1"}},
        "usage": STEP_USAGE}
RUN = {"id": "run_1", "object": "thread.run", "thread_id": "thread_1",
       "assistant_id": "asst_1", "status": "completed", "usage": RUN_USAGE}


def _static_read(counted: CountedUsage, operation: str, answer: dict[str, object]) -> object:
    record = RequestRecord("read", "GET")
    record.usage = dict(answer["usage"])  # type: ignore[call-overload]
    counted.answered("GET", operation, record, orjson.dumps(answer), None)
    return record.usage


def test_a_run_steps_read_counts_nothing_and_its_run_counts_once() -> None:
    counted = CountedUsage()
    step = "threads/thread_1/runs/run_1/steps/step_1"
    # main: STEP_USAGE each time
    assert _static_read(counted, step, STEP) is None
    assert _static_read(counted, step, STEP) is None
    assert _static_read(counted, "threads/thread_1/runs/run_1", RUN) == RUN_USAGE
    assert _static_read(counted, step, STEP) is None
    assert _static_read(counted, "threads/thread_1/runs/run_1", RUN) is None


def test_a_virtual_keys_run_step_read_counts_nothing() -> None:
    async def read() -> object:
        owners = ObjectOwners()
        record = RequestRecord("read", "GET")
        record.usage = dict(STEP_USAGE)
        await owned_answer(owners, "GET", "threads/thread_1/runs/run_1/steps/step_1",
                           "key-a", record, Answer(200, {}, orjson.dumps(STEP)), None)
        return record.usage

    assert asyncio.run(read()) is None  # main: STEP_USAGE
