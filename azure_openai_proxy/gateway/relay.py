"""Relaying Azure's answer to the client, once an attempt has succeeded.

Three shapes: a server-sent event stream (chat and completions streams go through
`ChatStreamNormalizer`; other streams are relayed as they arrive), a JSON body (the
client's model name restored and the usage read, from one parse), and anything else
(audio, file contents) streamed through unchanged (those two in `relaywhole.py`). A
failure after the first byte is never retried: the client gets an error event instead.

A normalized stream from `FastTransport` to `FastServer` is pushed (`_StreamPush`): the
upstream connection's callback normalizes each read and writes it to the client's
transport at once, waking the relaying task only to pause for a slow client and at the
end. Other pairs (aiohttp upstreams behind a proxy, other engines, unnormalized streams)
are pulled read by read; both send the client the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from azure_openai_proxy.errors import GatewayError, UpstreamError
from azure_openai_proxy.gateway.answertype import implied_type
from azure_openai_proxy.gateway.answerusage import (
    SpeechStreamMeter,
    with_counts,
    with_image_gen,
)
from azure_openai_proxy.gateway.formestimate import picture_stream_usage
from azure_openai_proxy.gateway.limitheaders import LimitedRequest
from azure_openai_proxy.gateway.relaywhole import MODEL_RESTORED, relay_answer
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.streammeter import StreamMeter, stream_meter
from azure_openai_proxy.gateway.streampush import StreamPush as _StreamPush
from azure_openai_proxy.governance.estimate import estimated_usage, with_context
from azure_openai_proxy.http.interface import (
    HttpRequest,
    Reply,
    ResponseStream,
)
from azure_openai_proxy.http.request import FastRequest, FastStream
from azure_openai_proxy.normalize.picture_meter import PictureStreamMeter
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.translate import relayed_response_headers
from azure_openai_proxy.upstream.fast import FastResponse
from azure_openai_proxy.upstream.h2 import H2Response
from azure_openai_proxy.upstream.transport import UpstreamResponse

__all__ = ["relay"]

# Upstream answers that can push their body into a sink (`relay(sink)`, `pause`, ...).
_PUSHING = (FastResponse, H2Response)

log = logging.getLogger("azure_openai_proxy")

_JSON_RESPONSE_LIMIT = 256 * 1024 * 1024


def relay(
    request: HttpRequest, operation: str, response: UpstreamResponse,
    policy: StreamPolicy | None, client_model: str | None, keep_azure_fields: bool,
    record: RequestRecord, *, want_id: bool = False, answer_limit: int = _JSON_RESPONSE_LIMIT,
    body: RequestBody | None = None, created: Callable[[str], None] | None = None,
) -> Coroutine[object, object, Reply]:
    """Send `response` to the client, once awaited; `client_model` is the name to restore
    (or None). A call that picks the coroutine to await, not a coroutine of its own: a
    stream's task resumes one frame fewer at each wake-up (issue 15).
    With `want_id`, the `id` of a created object (a 2xx JSON answer) goes into
    `record.created_id`, for resource affinity; a Responses stream's id is handed to
    `created` as soon as it passes. A JSON answer longer than
    `answer_limit` raises `UpstreamAnswerTooLarge` (a 502), never a truncated 200; a
    stream's event held past it, or past its kind's bound (sse.py), ends the stream with
    its error (`UpstreamEventTooLarge`).
    `body` (the client's) is read only when a stream ends before Azure's usage, to
    estimate it (an image edit's form parsed then, `picture_stream_usage`), and for a
    unit-billed answer without usage."""
    record.status = response.status
    # A virtual key's answer (its id in the record) carries the key's limits, never
    # Azure's: theirs are not relayed (the key's go on as head lines: `Answer.head_lines`,
    # `FastRequest.head_lines` or `LimitedRequest`, gateway/limitheaders.py).
    headers = relayed_response_headers(response.headers, record.key_id is None)
    if record.adaptations:
        # Tell the client what the gateway changed so Azure would accept the request.
        headers["x-proxy-adapted"] = ", ".join(record.adaptations)
    content_type = headers.get("content-type", "")
    if not content_type and operation in MODEL_RESTORED:
        # A chat's, an embedding's... answer whose head names no type: JSON, or the
        # stream the client asked for (never 2xx junk to refuse: `not_json`).
        content_type = headers["content-type"] = implied_type(body)
    if content_type.startswith("text/event-stream"):
        if policy is not None and type(response) in _PUSHING and (
                type(request) is FastRequest  # governed too (its `head_lines`): one test
                or (type(request) is LimitedRequest and type(request.wrapped) is FastRequest)):
            # Pushed (`_StreamPush`): this coroutine wakes only at the end and for a
            # slow client, so a task of its own would cost more than the chain it spares.
            # A disconnect cancels it here, and `_relay_stream` releases Azure's answer.
            return _relay_stream(request, response, headers, policy, record, body,
                                 None, answer_limit)  # positional: ~20 fewer a frame
        return _relay_tasked(request, operation, response, headers, policy, record, body,
                             created, answer_limit)
    return relay_answer(request, operation, response, headers, content_type, client_model,
                         keep_azure_fields, record, want_id, answer_limit, body)


async def _relay_tasked(
    request: HttpRequest, operation: str, response: UpstreamResponse,
    headers: dict[str, str], policy: StreamPolicy | None, record: RequestRecord,
    body: RequestBody | None, created: Callable[[str], None] | None, answer_limit: int,
) -> Reply:
    """A stream relayed by a task of its own, pulled read by read (`_pulled`)."""
    meter = (stream_meter(operation, body, created, answer_limit) if policy is None
             else None)
    # A task of its own: each chunk then resumes this one coroutine, not the whole
    # chain of handlers awaiting it (server, app, pipeline, here). A disconnect
    # cancels the handler, and with it this task.
    relaying = asyncio.get_running_loop().create_task(
        _relay_stream(request, response, headers, policy, record, body, meter,
                      answer_limit))
    try:
        return await relaying
    except asyncio.CancelledError:
        relaying.cancel()
        # Cancelled before its first step, it ran nothing: release Azure's answer and
        # estimate the usage here (both are no-ops once it has run). A resumed stream
        # (a GET's) left so relayed nothing: no record of nothing (`_relay_stream`).
        response.close()
        record.stream = True
        if record.usage is None and record.method != "GET" and (
                policy is not None or meter is not None):
            record.usage = (
                picture_stream_usage(meter, body) if type(meter) is PictureStreamMeter
                else meter.recorded() if type(meter) is SpeechStreamMeter
                else with_context(estimated_usage(_json(body), 0), record.context_tokens))
        raise


async def _relay_stream(
    request: HttpRequest, response: UpstreamResponse, headers: dict[str, str],
    policy: StreamPolicy | None, record: RequestRecord, body: RequestBody | None,
    meter: StreamMeter | None, event_limit: int,
) -> ResponseStream:
    record.stream = True
    if type(meter) is ResponsesStreamMeter:
        meter.claim = record.claim  # the ids the stream creates: the caller's (ownership)
        meter.after = record.sequence  # a resumed one's replay: counted (rereads.py)
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    normalizer = ChatStreamNormalizer(policy, event_limit) if policy is not None else None
    if normalizer is not None and record.claim is not None:  # a stored chat's id: the
        normalizer.claim = record.claim  # caller's as it shows it (ownership)
    ended_with_newline = True
    try:
        # Pushed from our own request, the head is sent (`send_head_soon`) once what
        # came with Azure's head has been relayed: it usually left with that, and then
        # no callback of the loop is made to send it (issue 15).
        later = normalizer is not None and type(request) is FastRequest and isinstance(
            response, _PUSHING)
        out = (request.stream(response.status, headers, soon=False)
               if later and type(request) is FastRequest
               else request.stream(response.status, headers))
        try:
            if (normalizer is not None and type(out) is FastStream
                    and isinstance(response, _PUSHING)):
                # Relayed from the upstream connection's callback (`_StreamPush`): this
                # coroutine wakes to wait for a slow client and at the end (inline, not a
                # coroutine of its own: every wake-up resumes one frame fewer, issue 15).
                push = _StreamPush(response, out, normalizer)
                response.relay(push)  # what arrived with the head: relayed now
                if later:
                    out.send_head_soon()  # (nothing, if the head has left)
                while True:
                    await push.changed()
                    if push.outcome is not None:
                        break
                    # The client stopped reading: Azure's socket is not read until it
                    # reads again.
                    await out.drained()
                    push.paused = False
                    response.resume()
                outcome, push.outcome = push.outcome, None
                if not isinstance(outcome, bytes):  # what `_pulled` would raise
                    try:
                        raise outcome  # kept in no local past here: no traceback cycle
                    finally:
                        del outcome
                tail = outcome
            else:
                tail, ended_with_newline = await _pulled(response, out, normalizer, meter)
                if type(meter) is PictureStreamMeter:
                    meter.finish()  # Azure's stream ended: its usage is the answer's
        except UpstreamError as exc:
            record.error = type(exc).__name__
            tail = (
                normalizer.finish(upstream_failed=exc.message)
                if normalizer is not None
                else _raw_stream_error(exc)
            )
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client left: nothing more can be written
        except Exception:
            # A bug of ours mid-stream: the headers are gone, so the stream still ends
            # properly (an error event and [DONE]) rather than with a second response.
            log.exception("unexpected error while relaying a stream")
            record.error = "internal_error"
            failure = "The gateway hit an unexpected error while relaying the stream."
            tail = (
                normalizer.finish(upstream_failed=failure)
                if normalizer is not None
                else _raw_stream_error(UpstreamError(failure))
            )
        if normalizer is None and not tail and not ended_with_newline:
            tail = b"\n"  # chatgpt-web needs a newline after the last event
        await out.end(tail)
    finally:
        if normalizer is not None and normalizer.done and record.error is None:
            # Only the chunked terminator can be left: keep the connection to Azure
            # even if the client hangs up as soon as it has read [DONE].
            response.finish_in_background()
        else:
            response.close()
        if normalizer is not None:
            # Never missing: Azure's usage, or (the client left, the stream broke) the
            # tokens relayed so far and the prompt's, estimated and marked so.
            record.usage = with_counts(normalizer.usage) or with_context(
                estimated_usage(_json(body), normalizer.content_chars), record.context_tokens)
        elif type(meter) is PictureStreamMeter:
            record.usage = picture_stream_usage(meter, body)  # Azure's, or estimated
        elif type(meter) is SpeechStreamMeter:
            record.usage = meter.recorded()  # Azure's, or estimated
        elif type(meter) is ResponsesStreamMeter:
            # A resumed stream (a GET's) left with nothing relayed adds no estimate: the
            # POST's record estimated the prompt and what it relayed. One that relayed a
            # picture is estimated (flagged: `restreamed` takes no estimate for Azure's).
            image_gen = meter.image_gen or meter.pictures_so_far()
            record.sequence = meter.last  # what its estimate counted (rereads.py)
            record.usage = with_counts(meter.usage) or (with_context(
                estimated_usage(_json(body), meter.content_chars), record.context_tokens)
                if record.method != "GET" or meter.content_chars or image_gen else None)
            if image_gen is not None:
                record.usage = with_image_gen(record.usage, image_gen, request.headers)
    return out


async def _pulled(
    response: UpstreamResponse, out: ResponseStream, normalizer: ChatStreamNormalizer | None,
    meter: StreamMeter | None,
) -> tuple[bytes, bool]:
    """Relay read by read: the tail to end the client's stream with, and whether what was
    written ended with a newline."""
    ended_with_newline = True
    # aclosing: a generator left at [DONE] is closed here, not by the loop later.
    async with contextlib.aclosing(response.chunks()) as chunks:
        async for chunk in chunks:
            if meter is not None:
                meter.feed(chunk)
            data = normalizer.feed(chunk) if normalizer is not None else chunk
            if normalizer is not None and normalizer.done:
                # Azure's [DONE]: end the client's stream now, [DONE] and the end of
                # the body in one write; Azure's own end is not waited for.
                return data, ended_with_newline
            if data:
                await out.write(data)
                if normalizer is None:  # a normalized stream ends with [DONE]
                    ended_with_newline = data[-1:] == b"\n"
    return (normalizer.finish() if normalizer is not None else b""), ended_with_newline


def _json(body: RequestBody | None) -> dict[str, Any] | None:
    return body.json if body is not None else None


def _raw_stream_error(exc: GatewayError) -> bytes:
    # The failure may cut an event part of which reached the client (an event past the
    # limit always is): a blank line ends that part first, so the client's parser does not
    # take this event's lines into it. After a whole event, a blank line dispatches nothing.
    return b"\n\nevent: error\ndata: " + orjson.dumps(exc.body()) + b"\n\n"
