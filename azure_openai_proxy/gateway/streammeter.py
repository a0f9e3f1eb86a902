"""Which meter reads a stream the relay passes on as Azure sends it (not normalized), by
its operation: the Responses API's (a response's stream, or a background one's resumed),
a gpt-image-1 picture's, a speech's (`stream_format: "sse"`), an Assistants run's made
with `stream: true` (read by the Responses meter: its `thread.run.completed` carries the
run's usage; a `threads/runs`' names the thread it made). Each holds one event up to
`sse.MAX_RELAYED_EVENT_BYTES` at most."""

from __future__ import annotations

from collections.abc import Callable

from azure_openai_proxy.gateway.answerusage import SpeechMeter, SpeechStreamMeter
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.normalize.picture_meter import PictureStreamMeter
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.observability.record import RequestRecord

__all__ = ["StreamMeter", "made_run", "run_created", "stream_meter"]

StreamMeter = ResponsesStreamMeter | PictureStreamMeter | SpeechStreamMeter

# Routes whose stream is a gpt-image-1 picture's (`stream: true`).
_PICTURING = frozenset({"images/generations", "images/edits"})


def stream_meter(operation: str, body: RequestBody | None,
                 created: Callable[[str], None] | None, event_limit: int) -> StreamMeter | None:
    """The meter of `operation`'s stream, None for one that has none: a Responses
    stream's hands its id to `created`; a speech without its input text has none (Azure's
    400, never a stream). `body` (the client's) is read for a speech only."""
    if operation == "responses" or made_run(operation):
        return ResponsesStreamMeter(created=created, event_limit=event_limit,
                                    thread_made=operation == "threads/runs")
    if operation.startswith("responses/") and operation.count("/") == 1:
        # A background response's stream resumed (GET responses/{id}?stream=true): its
        # `response.completed` carries the usage, as a read's answer does (rereads.py).
        return ResponsesStreamMeter(event_limit=event_limit)
    if operation in _PICTURING:
        return PictureStreamMeter(event_limit)
    if operation != "audio/speech":
        return None
    prompt = body.json if body is not None else None
    text = prompt.get("input") if prompt else None
    if prompt is None or not isinstance(text, str) or not text:
        return None
    return SpeechStreamMeter(SpeechMeter(text, prompt), event_limit)


def made_run(operation: str) -> bool:
    """Whether `operation`, POSTed, makes an Assistants run (`threads/{id}/runs`, or
    `threads/runs` with its thread): streamed when asked with `stream: true`."""
    if not operation.startswith("threads/") or not operation.endswith("/runs"):
        return False
    return operation.count("/") <= 2


def run_created(record: RequestRecord, home: Callable[[str], None]) -> Callable[[str], None]:
    """`created` for a run's stream: its id, as its first event names it, is the
    record's (`created_id`, as a JSON answer's is: its owner, its usage counted once by
    gateway/rereads.py) and `home`'s."""

    def created(run_id: str) -> None:
        if record.created_id is None:
            record.created_id = run_id
        home(run_id)

    return created
