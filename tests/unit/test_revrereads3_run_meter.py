"""The meter of an Assistants run's stream (`POST threads/{t}/runs` or `threads/runs`
with `"stream": true`: normalize/responses_meter.py, picked by gateway/streammeter.py):
the run's id from its first event, its usage from `thread.run.completed` (a step's
usage is part of it, not more), and, for a stream cut before that event, the text its
`thread.message.delta` events carried (the estimate's completion). Nothing tested the
text (a meter counting none survived) nor which operations make a run."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from azure_openai_proxy.gateway.streammeter import made_run, stream_meter
from azure_openai_proxy.governance.estimate import text_length
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter

_RUN = {"id": "run_abc", "object": "thread.run", "thread_id": "thread_1",
        "assistant_id": "asst_1", "status": "queued", "usage": None}
_USAGE = {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}
_STEP = {"id": "step_1", "object": "thread.run.step", "run_id": "run_abc",
         "type": "message_creation", "status": "in_progress", "usage": None}
_TEXTS = ["Hello", " wörld", " ✓"]


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data))


def _delta(text: str) -> bytes:
    return _frame("thread.message.delta", {
        "id": "msg_1", "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text",
                               "text": {"value": text, "annotations": []}}]}})


_BEGINNING = [_frame("thread.run.created", _RUN), _frame("thread.run.queued", _RUN),
              _frame("thread.run.in_progress", {**_RUN, "status": "in_progress"}),
              _frame("thread.run.step.created", _STEP),
              _frame("thread.message.created", {"id": "msg_1", "object": "thread.message",
                                                "run_id": "run_abc", "content": []}),
              *(_delta(text) for text in _TEXTS)]
_END = [_frame("thread.run.step.completed", {**_STEP, "status": "completed",
                                             "usage": {**_USAGE, "total_tokens": 1}}),
        _frame("thread.run.completed", {**_RUN, "status": "completed", "usage": _USAGE}),
        b"event: done\ndata: [DONE]\n\n"]


def _fed(frames: list[bytes]) -> tuple[ResponsesStreamMeter, list[str]]:
    created: list[str] = []
    meter = stream_meter("threads/thread_1/runs", None, created.append, 1 << 20)
    assert isinstance(meter, ResponsesStreamMeter)
    for frame in frames:
        meter.feed(frame)
    return meter, created


def test_a_whole_runs_stream_gives_its_id_once_and_the_runs_usage() -> None:
    meter, created = _fed(_BEGINNING + _END)
    assert created == ["run_abc"] and meter.response_id == "run_abc"
    assert meter.usage == _USAGE  # the run's, not its step's


def test_a_cut_runs_stream_counts_the_text_its_deltas_carried() -> None:
    meter, created = _fed(_BEGINNING)
    assert created == ["run_abc"] and meter.usage is None
    assert meter.content_chars == sum(text_length(text) for text in _TEXTS) > 0


@pytest.mark.parametrize(("operation", "run"), [
    ("threads/thread_1/runs", True), ("threads/runs", True),
    ("threads/thread_1/runs/run_1", False), ("threads/thread_1/runs/run_1/cancel", False),
    ("threads/thread_1/messages", False), ("threads", False), ("responses", False),
])
def test_the_operations_that_make_a_run(operation: str, run: bool) -> None:
    assert made_run(operation) is run


def test_a_stream_cut_after_its_step_completed_has_no_usage_yet() -> None:
    # the step's usage is a part of the run's: a read of the run counts it (less the
    # cut stream's estimate), not the step's as if it were the whole
    meter, _ = _fed(_BEGINNING + _END[:1])
    assert meter.usage is None
