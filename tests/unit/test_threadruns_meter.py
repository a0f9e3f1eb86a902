"""The meter of a `threads/runs` stream (create a thread and run it, `"stream": true`:
gateway/streammeter.py picks normalize/responses_meter.py's with `thread_made`): the
run's id is the record's created object (handed to `created` first), and the thread the
run names is claimed after it, once; a run's stream on a thread that exists
(`threads/{t}/runs`) claims no thread."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from azure_openai_proxy.gateway.streammeter import run_created, stream_meter
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter

_THREAD = {"id": "thread_new", "object": "thread", "created_at": 1, "metadata": {}}
_RUN = {"id": "run_abc", "object": "thread.run", "thread_id": "thread_new",
        "assistant_id": "asst_1", "status": "queued", "usage": None}
_USAGE = {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data))


_STREAM = b"".join([
    _frame("thread.created", _THREAD), _frame("thread.run.created", _RUN),
    _frame("thread.run.queued", _RUN),
    _frame("thread.run.in_progress", {**_RUN, "status": "in_progress"}),
    _frame("thread.run.completed", {**_RUN, "status": "completed", "usage": _USAGE}),
    b"event: done\ndata: [DONE]\n\n"])


def _metered(operation: str) -> tuple[list[str], list[list[str]], ResponsesStreamMeter]:
    created: list[str] = []
    claimed: list[list[str]] = []
    meter = stream_meter(operation, None, created.append, 1 << 20)
    assert type(meter) is ResponsesStreamMeter
    meter.claim = claimed.append
    meter.feed(_STREAM)
    return created, claimed, meter


def test_a_thread_made_with_its_run_is_claimed_after_the_run() -> None:
    created, claimed, meter = _metered("threads/runs")
    assert created == ["run_abc", "thread_new"]  # both homed (gateway/attempts.py)
    assert claimed == [["run_abc"], ["thread_new"]]
    assert meter.usage == _USAGE


def test_a_run_on_a_thread_that_exists_claims_no_thread() -> None:
    created, claimed, meter = _metered("threads/thread_old/runs")
    assert created == ["run_abc"]
    assert claimed == [["run_abc"]]
    assert meter.usage == _USAGE


def test_the_thread_made_is_homed_and_the_record_stays_the_runs() -> None:
    """`created` of a run's stream (streammeter.run_created): the record's `created_id`
    is the run's, the thread made with it is homed as the run is (review revthreadruns:
    a static key's thread, owned by no one, was routed at random across resources)."""
    record = SimpleNamespace(created_id=None)
    homed: list[str] = []
    meter = stream_meter("threads/runs", None, run_created(record, homed.append),  # type: ignore[arg-type]
                         1 << 20)
    assert type(meter) is ResponsesStreamMeter
    meter.feed(_STREAM)
    assert record.created_id == "run_abc"
    assert homed == ["run_abc", "thread_new"]
