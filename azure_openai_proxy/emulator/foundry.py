"""Azure AI model inference (Foundry model deployments) on the emulator.

    POST /models/chat/completions?api-version=V   `model` in the body: a deployment's name
    POST /models/embeddings?api-version=V
    GET  /models/info?api-version=V                the model in `x-ms-model-mesh-model-name`
                                                   (or a `model` query parameter)

A Foundry resource serves the same deployments as its Azure OpenAI paths do, so the
model names are the configured deployments' names; their windows, queued faults and
request log are the ones `/openai/...` uses. The pipeline, in the service's order:

    log it -> authenticate (401) -> api-version (400) -> body (400)
      -> model (400 no_model_name, 404 unknown_model, 400 OperationNotSupported)
      -> extra parameters (400 unless the `extra-parameters` header allows them)
      -> a partner model's messages (422 for a `developer` one; Mistral's for a tool
         call's `index`)
      -> queued fault -> rate limit (429) -> the chat / embeddings handler

Foundry's own error shapes (`unknown_model`, `no_model_name`, its 429 wording) are the
ones its clients report; the rest is Azure's. A chat stream carries its usage on its last
frame with a `finish_reason`, of its own accord (the API takes no `stream_options`):
Microsoft's how-to for reasoning models on Foundry Models shows that frame.

A body key the API's schema does not define (OpenAI's `user`, `n`, `stream_options`,
`logprobs`...) is refused, 400 `{"detail": "Extra parameters ['user'] are not allowed
when extra-parameters is not set or set to be 'error'. ..."}`, unless the request's
`extra-parameters` header says `drop` (removed before the model sees it) or
`pass-through` (given to the model); another value of the header is a 400 too. (Clients
report the words: a Foundry stub refusing `stream_options`, a Rust client refused
`output_dimension` on embeddings; Portkey's gateway#534 the header's other value. The
schema: @azure-rest/ai-inference's GetChatCompletionsBodyParam, plus `modalities`, and
the embeddings' `input`, `dimensions`, `encoding_format`, `input_type`.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson
from aiohttp import web

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.answers import error_response, limit_headers
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.exchange import (
    ConnectionDropped,
    EmulatorState,
    Exchange,
    apply_fault,
)
from azure_openai_proxy.emulator.generation import plan_chat
from azure_openai_proxy.emulator.ops import HANDLERS, cost_of
from azure_openai_proxy.emulator.ops_text import facts
from azure_openai_proxy.emulator.requestlog import record
from azure_openai_proxy.emulator.routing import Route
from azure_openai_proxy.emulator.textgen import chat_prompt_tokens
from azure_openai_proxy.emulator.validation import CHAT_PARAMS, EMBEDDING_PARAMS
from azure_openai_proxy.emulator.versions import DATED_VERSIONS, ApiVersion

__all__ = ["FOUNDRY_VERSIONS", "add_routes"]

_log = logging.getLogger(__name__)

# The model inference API's own version, and Azure OpenAI's dated ones (its OpenAI models
# answer "enabled only for api versions ..." by the same table).
_INFERENCE_VERSION = "2024-05-01-preview"
FOUNDRY_VERSIONS = DATED_VERSIONS | {_INFERENCE_VERSION}
# The dated checks judge the model inference version as of this date: it takes
# `response_format: json_schema` (Microsoft's structured-outputs how-to for Foundry Models
# sends it on 2024-05-01-preview; Cohere-command-r-plus-08-2024 answers), which Azure
# OpenAI's dated API first takes on 2024-08-01-preview, and nothing else those checks
# gate shipped between the two dates.
_INFERENCE_JUDGED_AS = "2024-08-01"
_MODEL_HEADER = "x-ms-model-mesh-model-name"
_PROVIDERS = (
    ("deepseek", "DeepSeek"), ("llama", "Meta"), ("mistral", "Mistral AI"),
    ("phi", "Microsoft"), ("grok", "xAI"), ("cohere", "Cohere"),
)
_SCHEMA = {
    "chat": frozenset({"messages", "model", "frequency_penalty", "presence_penalty",
                       "temperature", "top_p", "max_tokens", "response_format", "stop",
                       "stream", "tools", "tool_choice", "seed", "modalities"}),
    "embeddings": frozenset({"input", "model", "dimensions", "encoding_format",
                             "input_type"}),
}
_EXTRA_OPTIONS = ("error", "drop", "pass-through")
# What the emulated model reads of a body passed through: the rest (a Llama's `top_k`) it
# takes and ignores, as no handler here knows them.
_MODEL_READS = {"chat": CHAT_PARAMS.keys(), "embeddings": EMBEDDING_PARAMS.keys()}
_NO_MODEL = (
    "No model specified in request. Please provide a model name in the request body or "
    "as a x-ms-model-mesh-model-name header."
)


def add_routes(app: web.Application, key: web.AppKey[EmulatorState]) -> None:
    """Register the Foundry family; call before the catch-all data-plane route."""

    def serving(operation: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await _serve(request, request.app[key], operation)
        return handle

    app.router.add_post("/models/chat/completions", serving("chat"))
    app.router.add_post("/models/embeddings", serving("embeddings"))
    app.router.add_get("/models/info", serving("info"))


async def _serve(request: web.Request, state: EmulatorState, name: str) -> web.StreamResponse:
    request_id = str(uuid.uuid4())
    headers = {"apim-request-id": request_id, "x-request-id": request_id,
               "x-ms-region": state.config.region}
    entry: dict[str, Any] = state.log.append(_logged(request, b""))
    exchange: Exchange | None = None
    try:
        raw = await _read_body(request, state.config.max_body_bytes)
        entry.update(_logged(request, raw))
        exchange = _FoundryExchange(request, state, Route(name, v1=False), raw, request_id,
                                    headers)
        response = await _pipeline(exchange, entry)
    except wire_errors.AzureError as error:
        response = error_response(error, headers)
    except ConnectionDropped:
        entry["status"] = exchange.answered if exchange is not None else None
        raise asyncio.CancelledError() from None  # the socket is gone: write nothing
    except Exception:  # an emulator bug: answer like the service's own 500
        _log.exception("emulator failed on %s %s", request.method, request.path)
        if exchange is not None and exchange.answered is not None:
            raise
        response = error_response(wire_errors.server_error(request_id), headers)
    entry["status"] = response.status
    return response


class _FoundryExchange(Exchange):
    """An exchange whose chat stream ends as the model inference API's do."""

    async def stream(self, frames: Iterable[tuple[bytes, int]]) -> web.StreamResponse:
        # The chat handler's own plan again (the same body and facts make the same one):
        # its counts, as the non-streamed answer's usage gives them.
        prompt = chat_prompt_tokens(self.body["messages"])
        plan = plan_chat(self.body, facts(self), prompt)
        usage = {"completion_tokens": plan.completion_tokens, "prompt_tokens": prompt,
                 "total_tokens": prompt + plan.completion_tokens}
        return await super().stream(_usage_on_last_finish(list(frames), usage))


def _usage_on_last_finish(
    frames: list[tuple[bytes, int]], usage: dict[str, int]
) -> list[tuple[bytes, int]]:
    """`frames` with `usage` on the last one that has a `finish_reason` (none when no
    frame has one)."""
    for at in range(len(frames) - 1, -1, -1):
        raw, tokens = frames[at]
        if not raw.startswith(b"data: {"):
            continue
        frame = orjson.loads(raw[6:])
        choices = frame.get("choices")
        if choices and any(c.get("finish_reason") for c in choices):
            frame["usage"] = usage
            return [*frames[:at], (b"data: " + orjson.dumps(frame) + b"\n\n", tokens),
                    *frames[at + 1:]]
    return frames


def _logged(request: web.Request, body: bytes) -> dict[str, Any]:
    return record(method=request.method, path=request.path, query=request.query_string,
                  query_pairs=request.query.items(), headers=request.headers.items(), body=body)


async def _read_body(request: web.Request, limit: int) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise wire_errors.payload_too_large(limit) from None


async def _pipeline(ex: Exchange, entry: dict[str, Any]) -> web.StreamResponse:
    _authenticate(ex.request.headers, ex.config.api_keys, ex.config.entra_tokens)
    ex.version = foundry_version(ex.request.query.get("api-version"))
    operation = ex.route.operation
    if operation == "info":
        model = ex.request.headers.get(_MODEL_HEADER) or ex.request.query.get("model")
        return ex.json(model_info(_bind(ex, model, entry)))
    ex.body = _json_object(ex.raw_body)
    model = ex.body.get("model") or ex.request.headers.get(_MODEL_HEADER)
    deployment = _bind(ex, model if isinstance(model, str) else None, entry)
    if deployment.kind != ex.route.kind:
        title = "chatCompletion" if operation == "chat" else "embeddings"
        raise wire_errors.operation_not_supported(deployment.model, title)
    _extra_parameters(ex.body, operation, ex.request.headers.get("extra-parameters"))
    if operation == "chat":
        _partner_messages(deployment.model.lower(), ex.body.get("messages"))
    fault = ex.state.faults.take(deployment.name)
    if fault is not None:
        entry["fault"] = fault.kind
        await apply_fault(ex, fault, rate_limited)
    verdict = ex.state.limiter.admit(deployment.name, cost_of(ex))
    if verdict is not None:
        ex.headers.update(limit_headers(verdict))
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after)
    return await HANDLERS[operation](ex)


def _extra_parameters(body: dict[str, Any], operation: str, option: str | None) -> None:
    """Keys outside the schema: refused (no header, or `error`), removed (`drop`) or
    given to the model (`pass-through`)."""
    if option is not None and option not in _EXTRA_OPTIONS:
        raise _detail(f"Unexpected EXTRA_PARAMETERS option {option}, expected options are "
                      f"{list(_EXTRA_OPTIONS)}")
    extra = [name for name in body if name not in _SCHEMA[operation]]
    if not extra:
        return
    if option in ("drop", "pass-through"):
        for name in extra:
            if option == "drop" or name not in _MODEL_READS[operation]:
                del body[name]
        return
    raise _detail(f"Extra parameters {extra} are not allowed when extra-parameters is not "
                  "set or set to be 'error'. Set extra-parameters to 'pass-through' to "
                  "pass to the model.")


def _partner_messages(model: str, messages: Any) -> None:
    """What the partner models (DeepSeek, Llama, Mistral...: not OpenAI's) refuse in a
    message: the `developer` role, 422 (Cherry Studio#12321: Azure's DeepSeek-R1), in the
    API's pydantic shape (LiteLLM#11844's); and Mistral's a key its schema lacks, such as
    the `index` a client copies into an assistant message's tool calls from a stream's
    deltas: 422 "unknown field: parameter index is not a valid field" (the words
    LiteLLM's azure_ai provider retries on; the wrapping is the API's 422)."""
    if not any(word in model for word, _ in _PROVIDERS):
        return
    for at, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "developer":
            raise wire_errors.AzureError(422, {"error": {
                "code": "Invalid input", "status": 422, "message": "invalid input error",
                "details": [{"type": "literal_error", "loc": ["body", "messages", at, "role"],
                             "msg": "Input should be 'system', 'user', 'assistant' or 'tool'",
                             "input": "developer"}]}})
        calls = message.get("tool_calls")
        if "mistral" in model and isinstance(calls, list) and any(
                isinstance(c, dict) and "index" in c for c in calls):
            raise wire_errors.AzureError(422, {"error": {
                "code": "Invalid input", "status": 422,
                "message": "unknown field: parameter index is not a valid field"}})


def _detail(message: str) -> wire_errors.AzureError:
    return wire_errors.AzureError(400, {"detail": message})


def _authenticate(
    headers: Mapping[str, str], keys: tuple[str, ...], tokens: tuple[str, ...]
) -> None:
    """`api-key`, or `Authorization: Bearer` with a key or an Entra token."""
    key = headers.get("api-key")
    if key is not None:
        if key not in keys:
            raise wire_errors.invalid_key()
        return
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise wire_errors.invalid_key()
    if token in keys or token in tokens:
        return
    if token.count(".") != 2:  # not a JWT: it was meant as a key
        raise wire_errors.invalid_key()
    raise wire_errors.invalid_token()


def foundry_version(raw: str | None) -> ApiVersion:
    """The request's api-version; missing or unknown is a 400 (not the dated API's 404)."""
    if raw is None or raw not in FOUNDRY_VERSIONS:
        raise wire_errors.bad_request("API version not supported")
    date = _INFERENCE_JUDGED_AS if raw == _INFERENCE_VERSION else raw[:10]
    return ApiVersion(raw=raw, date=date, preview=raw.endswith("-preview"))


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise wire_errors.invalid_request("The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise wire_errors.invalid_request("The request body must be a JSON object.")
    return parsed


def _bind(ex: Exchange, model: str | None, entry: dict[str, Any]) -> EmulatedDeployment:
    if not model:
        raise _coded(400, "no_model_name", _NO_MODEL)
    deployment = ex.config.deployment(model)
    if deployment is None:
        raise unknown_model(model)
    entry["deployment"] = deployment.name
    ex.deployment = deployment
    verdict = ex.state.limiter.peek(deployment.name)
    if verdict is not None:
        ex.headers.update(limit_headers(verdict))
    return deployment


def unknown_model(model: str) -> wire_errors.AzureError:
    message = f"Unknown model: {model}"
    return wire_errors.AzureError(
        404, {"error": {"code": "unknown_model", "message": message, "details": message}}
    )


def rate_limited(seconds: float) -> wire_errors.AzureError:
    """429 with the retry headers Azure OpenAI sends (the gateway's failover reads them)."""
    whole = max(1, math.ceil(seconds))
    return wire_errors.AzureError(
        429,
        {"error": {"code": "429",
                   "message": f"Rate limit is exceeded. Try again in {whole} seconds."}},
        {"retry-after": str(whole), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))},
    )


def model_info(deployment: EmulatedDeployment) -> dict[str, str]:
    """`GET /models/info`: the model's name, type and provider."""
    lowered = deployment.model.lower()
    provider = next((p for word, p in _PROVIDERS if word in lowered), "OpenAI")
    kind = "embeddings" if deployment.kind == "embeddings" else "chat-completion"
    return {"model_name": deployment.model, "model_type": kind, "model_provider_name": provider}


def _coded(status: int, code: str, message: str) -> wire_errors.AzureError:
    return wire_errors.AzureError(
        status, {"error": {"code": code, "message": message, "details": message}}
    )

