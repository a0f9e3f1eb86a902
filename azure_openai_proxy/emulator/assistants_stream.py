"""A run made with `"stream": true`, told as Azure's Assistants event stream (as OpenAI's
v2 API streams it): `event: <name>` and `data: <object>` per event, in the order the run
goes through (created, queued, in progress; its step created and in progress; its
message created, in progress, its text in `thread.message.delta` events, completed; the
step completed; the run completed, with its usage), then `event: done` with `data:
[DONE]`; a run made with its thread (`threads/runs`) tells `thread.created` first. The
run is done before the first event is written (emulator/assistants.py
`_complete`): what the events show is what a read shows after. Pure."""

from __future__ import annotations

from typing import Any

import orjson

from azure_openai_proxy.emulator.storage import Stores

__all__ = ["streamed_run"]

_DONE = (b"event: done\ndata: [DONE]\n\n", 0)


def _event(name: str, data: dict[str, Any], tokens: int = 0) -> tuple[bytes, int]:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data)), tokens


def streamed_run(queued: dict[str, Any], run: dict[str, Any], tokens: list[str],
                 stores: Stores, thread: dict[str, Any] | None = None
                 ) -> list[tuple[bytes, int]]:
    """The events (frame, tokens) of `run`, done with its answer's `tokens`; `queued`:
    the run as it was made; `thread`: the thread made with it, if one was."""
    step = stores.run_steps[run["id"]][-1]
    message = next(m for m in reversed(stores.thread_messages[run["thread_id"]])
                   if m["run_id"] == run["id"])
    working = {**queued, "status": "in_progress", "started_at": run["started_at"]}
    step_working = {**step, "status": "in_progress", "completed_at": None, "usage": None}
    writing = {**message, "status": "in_progress", "completed_at": None, "content": []}
    frames = [] if thread is None else [_event("thread.created", thread)]
    frames += [_event("thread.run.created", queued), _event("thread.run.queued", queued),
              _event("thread.run.in_progress", working),
              _event("thread.run.step.created", step_working),
              _event("thread.run.step.in_progress", step_working),
              _event("thread.message.created", writing),
              _event("thread.message.in_progress", writing)]
    for token in tokens:
        frames.append(_event("thread.message.delta", {
            "id": message["id"], "object": "thread.message.delta",
            "delta": {"content": [{"index": 0, "type": "text",
                                   "text": {"value": token, "annotations": []}}]}}, 1))
    frames += [_event("thread.message.completed", message),
               _event("thread.run.step.completed", step),
               _event("thread.run.completed", run), _DONE]
    return frames
