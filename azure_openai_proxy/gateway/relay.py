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
from typing import Any, cast

import orjson
from aiohttp import web

from azure_openai_proxy.errors import GatewayError, UpstreamError
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.http.wire import PlainAnswer
from azure_openai_proxy.normalize.body import normalize_answer
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.observability.accesslog import RequestRecord
from azure_openai_proxy.translate import relayed_response_headers
from azure_openai_proxy.upstream.transport import UpstreamResponse

__all__ = ["relay"]

log = logging.getLogger("azure_openai_proxy")

_JSON_RESPONSE_LIMIT = 256 * 1024 * 1024
# Answers whose `model` is the deployment's, to be replaced by the client's name.
_MODEL_RESTORED = frozenset({"chat/completions", "completions", "embeddings", "responses"})


async def relay(
    request: web.Request, operation: str, response: UpstreamResponse,
    policy: StreamPolicy | None, client_model: str | None, keep_azure_fields: bool,
    record: RequestRecord, *, want_id: bool = False,
) -> web.StreamResponse:
    """Send `response` to the client; `client_model` is the name to restore (or None).
    With `want_id`, the `id` of a created object (a 2xx JSON answer) goes into
    `record.created_id`, for resource affinity."""
    record.status = response.status
    headers = relayed_response_headers(response.headers)
    if record.adaptations:
        # Tell the client what the gateway changed so Azure would accept the request.
        headers["x-proxy-adapted"] = ", ".join(record.adaptations)
    content_type = headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        return await _relay_stream(request, response, headers, policy, record)
    if content_type.startswith("application/json"):
        try:
            raw = await response.read(_JSON_RESPONSE_LIMIT)
        finally:
            response.close()
        if operation in _MODEL_RESTORED:
            raw, record.usage = normalize_answer(
                raw, client_model=client_model, keep_azure_fields=keep_azure_fields
            )
        elif b'"usage"' in raw:
            record.usage = _usage_of(raw)
        if want_id and 200 <= response.status < 300:
            record.created_id = _id_of(raw)
        if isinstance(request, FastRequest):
            # FastServer writes this straight out; the type is cast for the app's
            # signatures, which only read `status`, `headers` and `prepared` from it.
            headers["content-type"] = "application/json"
            return cast(web.StreamResponse, PlainAnswer(response.status, headers, raw))
        headers.pop("content-type", None)
        return web.Response(status=response.status, body=raw, headers=headers,
                            content_type="application/json")
    return await _relay_bytes(request, response, headers)


async def _relay_stream(
    request: web.Request, response: UpstreamResponse, headers: dict[str, str],
    policy: StreamPolicy | None, record: RequestRecord,
) -> web.StreamResponse:
    record.stream = True
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    out = web.StreamResponse(status=response.status, headers=headers)
    normalizer = ChatStreamNormalizer(policy) if policy is not None else None
    ended_with_newline = True
    try:
        await out.prepare(request)
        try:
            tail = b""
            # aclosing: a generator left at [DONE] is closed here, not by the loop later.
            async with contextlib.aclosing(response.chunks()) as chunks:
                async for chunk in chunks:
                    data = normalizer.feed(chunk) if normalizer is not None else chunk
                    if normalizer is not None and normalizer.done:
                        # Azure's [DONE]: end the client's stream now, [DONE] and the end
                        # of the body in one write; Azure's own end is not waited for.
                        tail = data
                        break
                    if data:
                        await out.write(data)
                        ended_with_newline = data.endswith(b"\n")
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
        await out.write_eof(tail)
    finally:
        if normalizer is not None and normalizer.done and record.error is None:
            # Only the chunked terminator can be left: keep the connection to Azure
            # even if the client hangs up as soon as it has read [DONE].
            response.finish_in_background()
        else:
            response.close()
        if normalizer is not None:
            record.usage = normalizer.usage
    return out


async def _relay_bytes(
    request: web.Request, response: UpstreamResponse, headers: dict[str, str]
) -> web.StreamResponse:
    out = web.StreamResponse(status=response.status, headers=headers)
    try:
        await out.prepare(request)
        async for chunk in response.chunks():
            await out.write(chunk)
        await out.write_eof()
    finally:
        response.close()
    return out


def _usage_of(raw: bytes) -> dict[str, Any] | None:
    try:
        usage = orjson.loads(raw).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _id_of(raw: bytes) -> str | None:
    try:
        value = orjson.loads(raw).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


def _raw_stream_error(exc: GatewayError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(exc.body()) + b"\n\n"
