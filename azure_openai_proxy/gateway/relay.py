"""Relaying Azure's answer to the client, once an attempt has succeeded.

Three shapes: a server-sent event stream (chat and completions streams go through
`ChatStreamNormalizer`; other streams are relayed as they arrive), a JSON body (the
client's model name restored and the usage read, from one parse), and anything else
(audio, file contents) streamed through unchanged. A failure after the first byte is
never retried: the client gets an error event instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from azure_openai_proxy.errors import GatewayError, UpstreamError
from azure_openai_proxy.governance.estimate import estimated_usage
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply, ResponseStream
from azure_openai_proxy.normalize.body import normalize_answer
from azure_openai_proxy.normalize.stream import (
    ChatStreamNormalizer,
    ResponsesStreamMeter,
    StreamPolicy,
)
from azure_openai_proxy.observability.record import RequestRecord, usage_of
from azure_openai_proxy.translate import relayed_response_headers
from azure_openai_proxy.upstream.transport import UpstreamResponse

__all__ = ["relay"]

log = logging.getLogger("azure_openai_proxy")

_JSON_RESPONSE_LIMIT = 256 * 1024 * 1024
# Answers whose `model` is the deployment's, to be replaced by the client's name.
_MODEL_RESTORED = frozenset({"chat/completions", "completions", "embeddings", "responses"})
# Answers billed by units (images, audio minutes): their units are counted when Azure's
# answer carries no token usage.
_UNIT_BILLED = frozenset({"images/generations", "images/edits", "images/variations",
                          "audio/transcriptions", "audio/translations"})


async def relay(
    request: HttpRequest, operation: str, response: UpstreamResponse,
    policy: StreamPolicy | None, client_model: str | None, keep_azure_fields: bool,
    record: RequestRecord, *, want_id: bool = False, answer_limit: int = _JSON_RESPONSE_LIMIT,
    prompt: Mapping[str, Any] | None = None,
) -> Reply:
    """Send `response` to the client; `client_model` is the name to restore (or None).
    With `want_id`, the `id` of a created object (a 2xx JSON answer) goes into
    `record.created_id`, for resource affinity. A JSON answer longer than
    `answer_limit` raises `UpstreamAnswerTooLarge` (a 502), never a truncated 200.
    `prompt` (the request body) is read only when a stream ends before Azure's
    usage frame, to estimate its usage."""
    record.status = response.status
    headers = relayed_response_headers(response.headers)
    if record.adaptations:
        # Tell the client what the gateway changed so Azure would accept the request.
        headers["x-proxy-adapted"] = ", ".join(record.adaptations)
    content_type = headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        meter = ResponsesStreamMeter() if policy is None and operation == "responses" else None
        # A task of its own: each chunk then resumes this one coroutine, not the whole
        # chain of handlers awaiting it (server, app, pipeline, here). A disconnect
        # cancels the handler, and with it this task.
        relaying = asyncio.get_running_loop().create_task(
            _relay_stream(request, response, headers, policy, record, prompt, meter))
        try:
            return await relaying
        except asyncio.CancelledError:
            relaying.cancel()
            # Cancelled before its first step, it ran nothing: release Azure's answer and
            # estimate the usage here (both are no-ops once it has run).
            response.close()
            record.stream = True
            if record.usage is None and (policy is not None or meter is not None):
                record.usage = estimated_usage(prompt, 0)
            raise
    if content_type.startswith("application/json"):
        try:
            raw = await response.read(answer_limit)
        finally:
            response.close()
        if operation in _MODEL_RESTORED:
            raw, record.usage = normalize_answer(
                raw, client_model=client_model, keep_azure_fields=keep_azure_fields
            )
        elif b'"usage"' in raw:
            record.usage = usage_of(raw)
        elif operation in _UNIT_BILLED and 200 <= response.status < 300:
            record.usage = _unit_usage(operation, raw, prompt)
        if want_id and 200 <= response.status < 300:
            record.created_id = _id_of(raw)
        headers["content-type"] = "application/json"
        return Answer(response.status, headers, raw)
    if operation == "audio/speech" and 200 <= response.status < 300 and prompt:
        text = prompt.get("input")
        if isinstance(text, str) and text:
            record.usage = {"characters": len(text)}  # billed by the input's characters
    return await _relay_bytes(request, response, headers)


async def _relay_stream(
    request: HttpRequest, response: UpstreamResponse, headers: dict[str, str],
    policy: StreamPolicy | None, record: RequestRecord, prompt: Mapping[str, Any] | None,
    meter: ResponsesStreamMeter | None = None,
) -> ResponseStream:
    record.stream = True
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    normalizer = ChatStreamNormalizer(policy) if policy is not None else None
    ended_with_newline = True
    try:
        out = request.stream(response.status, headers)
        try:
            tail = b""
            # aclosing: a generator left at [DONE] is closed here, not by the loop later.
            async with contextlib.aclosing(response.chunks()) as chunks:
                async for chunk in chunks:
                    if meter is not None:
                        meter.feed(chunk)
                    data = normalizer.feed(chunk) if normalizer is not None else chunk
                    if normalizer is not None and normalizer.done:
                        # Azure's [DONE]: end the client's stream now, [DONE] and the end
                        # of the body in one write; Azure's own end is not waited for.
                        tail = data
                        break
                    if data:
                        await out.write(data)
                        if normalizer is None:  # a normalized stream ends with [DONE]
                            ended_with_newline = data[-1:] == b"\n"
                else:
                    tail = normalizer.finish() if normalizer is not None else b""
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
            record.usage = normalizer.usage or estimated_usage(prompt, normalizer.content_chars)
        elif meter is not None:
            record.usage = meter.usage or estimated_usage(prompt, meter.content_chars)
    return out


async def _relay_bytes(
    request: HttpRequest, response: UpstreamResponse, headers: dict[str, str]
) -> ResponseStream:
    try:
        out = request.stream(response.status, headers)
        async for chunk in response.chunks():
            await out.write(chunk)
        await out.end()
    finally:
        response.close()
    return out


def _unit_usage(operation: str, raw: bytes, prompt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The units a unit-billed JSON answer without token usage is priced by: the images
    returned (with the request's size and quality; a multipart edit's are not read:
    "unknown", left unpriced), or a verbose transcription's duration."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    if operation.startswith("images/"):
        data = answer.get("data")
        if not isinstance(data, list) or not data:
            return None
        size, quality = (prompt.get("size"), prompt.get("quality")) if prompt else ("unknown", None)
        return {"images": len(data), "size": size, "quality": quality}
    duration = answer.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
        return {"audio_seconds": float(duration)}
    return None


def _id_of(raw: bytes) -> str | None:
    try:
        value = orjson.loads(raw).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


def _raw_stream_error(exc: GatewayError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(exc.body()) + b"\n\n"
