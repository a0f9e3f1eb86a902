"""Relaying an answer that is not a stream (`gateway/relay.py` picks): a JSON body (the
client's model name restored and the usage read, from one parse), and anything else
(audio, file contents) streamed through unchanged."""

from __future__ import annotations

import orjson

from azure_openai_proxy.gateway.answertype import not_json
from azure_openai_proxy.gateway.answerusage import (
    SpeechMeter,
    answer_image_gen,
    countless_usage,
    unit_usage,
    with_image_gen,
)
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply, ResponseStream
from azure_openai_proxy.normalize.body import AnswerNotJson, normalize_answer
from azure_openai_proxy.observability.record import RequestRecord, usage_of
from azure_openai_proxy.upstream.transport import UpstreamResponse

__all__ = ["MODEL_RESTORED", "relay_answer"]

# Answers whose `model` is the deployment's, to be replaced by the client's name.
MODEL_RESTORED = frozenset({"chat/completions", "completions", "embeddings", "responses"})
# Answers billed by units (images, audio minutes): their units are counted when Azure's
# answer carries no token usage.
_UNIT_BILLED = frozenset({"images/generations", "images/edits", "images/variations",
                          "audio/transcriptions", "audio/translations"})


async def relay_answer(
    request: HttpRequest, operation: str, response: UpstreamResponse,
    headers: dict[str, str], content_type: str, client_model: str | None,
    keep_azure_fields: bool, record: RequestRecord, want_id: bool, answer_limit: int,
    body: RequestBody | None,
) -> Reply:
    """Any answer but a stream: JSON (the model restored, the usage read) or bytes."""
    if content_type.startswith("application/json") or operation in MODEL_RESTORED:
        # (A chat's, an embedding's... answer is JSON whatever else its content-type says.)
        try:
            raw = await response.read(answer_limit)
        finally:
            response.close()
        if operation in MODEL_RESTORED:
            try:
                raw, record.usage = normalize_answer(
                    raw, client_model=client_model, keep_azure_fields=keep_azure_fields
                )
            except AnswerNotJson:
                # An HTML page, an empty or cut body: the client's SDK would fail to
                # parse it (or hand back a string) instead of raising an API error.
                raise not_json(response.status, content_type) from None
            if (usage := record.usage) is not None and type(usage.get("total_tokens")) is not int:
                record.usage = countless_usage(usage, raw, (body.json if body is not None else None),
                                               record, response.status)
            if operation == "responses" and raw.find(b'"image_generation_call"') != -1:
                record.usage = with_image_gen(record.usage, answer_image_gen(raw), request.headers)
        elif raw.find(b'"usage"') >= 0:  # `find`: ~1k instructions fewer than `in`
            record.usage = usage_of(raw)
        elif operation in _UNIT_BILLED and 200 <= response.status < 300:
            record.usage = unit_usage(operation, raw, (body.json if body is not None else None))
        if want_id and 200 <= response.status < 300:
            record.created_id = _id_of(raw)
        headers["content-type"] = "application/json"
        return Answer(response.status, headers, raw)
    if operation == "audio/speech" and 200 <= response.status < 300 and (
            prompt := (body.json if body is not None else None)):
        text = prompt.get("input")
        if isinstance(text, str) and text:
            # billed by the input's characters (tts), or by tokens (gpt-4o-mini-tts): its
            # audio's, estimated from its length once it has passed (`SpeechMeter`)
            heard = SpeechMeter(text, prompt)
            record.usage = heard.usage
            return await _relay_bytes(request, response, headers, heard)
    return await _relay_bytes(request, response, headers)


async def _relay_bytes(
    request: HttpRequest, response: UpstreamResponse, headers: dict[str, str],
    heard: SpeechMeter | None = None,
) -> ResponseStream:
    try:
        out = request.stream(response.status, headers)
        if heard is None:
            async for chunk in response.chunks():
                await out.write(chunk)
        else:  # a speech's audio: its length prices a token-priced model's
            async for chunk in response.chunks():
                heard.feed(chunk)
                await out.write(chunk)
            heard.finish()
        await out.end()
    finally:
        response.close()
    return out


def _id_of(raw: bytes) -> str | None:
    try:
        value = orjson.loads(raw).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None
