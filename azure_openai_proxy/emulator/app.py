"""The emulator's aiohttp application: the data-plane pipeline and its admin routes.

Every data-plane request goes through one pipeline, in Azure's order:

    log it -> route (404) -> authenticate (401) -> api-version (404 / 400 on v1)
      -> deployment (404 DeploymentNotFound, 400 OperationNotSupported)
      -> queued fault -> rate limit (429) -> operation handler

and any `AzureError` raised on the way becomes its reply, with the Azure headers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from azure_openai_proxy.emulator import admin, foundry, wire_errors
from azure_openai_proxy.emulator.answers import error_response, limit_headers
from azure_openai_proxy.emulator.config import EmulatorConfig, model_family
from azure_openai_proxy.emulator.exchange import (
    ConnectionDropped,
    EmulatorState,
    Exchange,
    apply_fault,
)
from azure_openai_proxy.emulator.multipart import MultipartError, field, parse_form
from azure_openai_proxy.emulator.ops import HANDLERS, JSON_OPERATIONS, MULTIPART_OPERATIONS, cost_of
from azure_openai_proxy.emulator.ratelimit import RateLimiter
from azure_openai_proxy.emulator.realtime_ws import realtime_deployment
from azure_openai_proxy.emulator.requestlog import record
from azure_openai_proxy.emulator.routing import OPERATION_TITLE, UNSUPPORTED_NAME, resolve
from azure_openai_proxy.emulator.versions import check_operation, dated_version, v1_version

_log = logging.getLogger(__name__)
STATE_KEY = web.AppKey("emulator_state", EmulatorState)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)


def create_emulator_app(config: EmulatorConfig) -> web.Application:
    """A fresh emulator: its own deployments' windows, fault queue and request log."""
    app = web.Application(client_max_size=config.max_body_bytes)
    limits = [(d.name, d.tpm, d.rpm) for d in config.deployments]
    app[STATE_KEY] = EmulatorState(config=config, limiter=RateLimiter(
        limits, time.monotonic, config.rate_window_seconds
    ))
    admin.add_routes(app, STATE_KEY)
    foundry.add_routes(app, STATE_KEY)  # /models/...: Azure AI model inference
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def _handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    request_id = str(uuid.uuid4())
    headers = _base_headers(state, request_id)
    client_id = request.headers.get("x-ms-client-request-id")
    if client_id:
        headers["x-ms-client-request-id"] = client_id
    entry: dict[str, Any] = state.log.append(
        record(
            method=request.method, path=request.path, query=request.query_string,
            query_pairs=request.query.items(), headers=request.headers.items(), body=b"",
        )
    )
    exchange: Exchange | None = None
    try:
        raw = await _read_body(request, state.config.max_body_bytes, entry)
        entry.update(record(method=request.method, path=request.path,
                            query=request.query_string, query_pairs=request.query.items(),
                            headers=request.headers.items(), body=raw))
        route = resolve(request.method, request.path)
        if route is None:
            raise wire_errors.resource_not_found()
        exchange = Exchange(request, state, route, raw, request_id, headers)
        response = await _pipeline(exchange, entry)
        if isinstance(response, web.WebSocketResponse):
            # When and how the session ended: tests time a client's leaving by it.
            entry["closed_at"], entry["close_code"] = time.monotonic(), response.close_code
    except wire_errors.AzureError as error:
        response = error_response(error, headers)
    except ConnectionDropped:
        entry["status"] = exchange.answered if exchange is not None else None
        raise asyncio.CancelledError() from None  # the socket is gone: write nothing
    except Exception:  # an emulator bug: answer like Azure's own 500, keep the traceback
        _log.exception("emulator failed on %s %s", request.method, request.path)
        if exchange is not None and exchange.answered is not None:
            raise
        response = error_response(wire_errors.server_error(request_id), headers)
    entry["status"] = response.status
    return response


async def _read_body(request: web.Request, limit: int, entry: dict[str, Any]) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        entry["body_size"] = request.content_length
        raise wire_errors.payload_too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise wire_errors.payload_too_large(limit) from None


async def _pipeline(ex: Exchange, entry: dict[str, Any]) -> web.StreamResponse:
    state, route = ex.state, ex.route
    _authenticate(ex)
    raw_version = ex.request.query.get("api-version")
    ex.version = v1_version(raw_version) if route.v1 else dated_version(raw_version)
    check_operation(route.operation, ex.version)
    if route.path_deployment is not None:
        _bind_deployment(ex, route.path_deployment, entry)
    elif route.operation == "realtime":
        _bind_deployment(ex, realtime_deployment(ex), entry)
    _parse_body(ex)
    if route.kind is not None and ex.deployment is None:
        _bind_deployment(ex, _model_name(ex), entry)
    name = ex.deployment.name if ex.deployment is not None else None
    fault = state.faults.take(name)
    if fault is not None:
        entry["fault"] = fault.kind
        await apply_fault(ex, fault, lambda retry_after: _rate_limited(ex, retry_after))
    if ex.deployment is not None:
        verdict = state.limiter.admit(ex.deployment.name, cost_of(ex))
        if verdict is not None:
            ex.headers.update(limit_headers(verdict))
            if not verdict.allowed:
                raise wire_errors.rate_limited(
                    OPERATION_TITLE.get(route.operation, route.operation),
                    ex.version.raw, verdict.retry_after,
                    "call" if verdict.limited_by == "requests" else "token",
                )
    return await HANDLERS[route.operation](ex)


def _authenticate(ex: Exchange) -> None:
    config, headers = ex.config, ex.request.headers
    key = headers.get("api-key")
    if key is not None:
        if key not in config.api_keys:
            raise wire_errors.invalid_key()
        return
    authorization = headers.get("Authorization")
    if authorization is None:
        raise wire_errors.missing_key()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise wire_errors.invalid_key()
    if token in config.entra_tokens or (ex.route.v1 and token in config.api_keys):
        return
    # A v1 bearer that is not a JWT was meant as a key; a JWT-shaped one as an Entra token.
    if ex.route.v1 and token.count(".") != 2:
        raise wire_errors.invalid_key()
    raise wire_errors.invalid_token()


def _parse_body(ex: Exchange) -> None:
    operation = ex.route.operation
    if operation in MULTIPART_OPERATIONS:
        try:
            ex.form = parse_form(ex.raw_body, ex.request.headers.get("Content-Type", ""))
        except MultipartError as exc:
            raise wire_errors.invalid_request(str(exc)) from None
    elif operation in JSON_OPERATIONS:
        try:
            parsed = orjson.loads(ex.raw_body)
        except orjson.JSONDecodeError:
            raise wire_errors.invalid_request(_BAD_JSON) from None
        if not isinstance(parsed, dict):
            raise wire_errors.invalid_request(
                f"{ex.raw_body[:80].decode('utf-8', 'replace')} is not of type 'object'"
            )
        ex.body = parsed


def _model_name(ex: Exchange) -> str:
    model = ex.body.get("model") if ex.body else field(ex.form, "model")
    if not isinstance(model, str) or not model:
        raise wire_errors.invalid_request(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    return model


def _bind_deployment(ex: Exchange, name: str, entry: dict[str, Any]) -> None:
    deployment = ex.config.deployment(name)
    if deployment is None:
        raise wire_errors.deployment_not_found()
    entry["deployment"] = deployment.name
    ex.deployment = deployment
    ex.headers["azureml-model-session"] = f"{deployment.name}-emulated"
    verdict = ex.state.limiter.peek(deployment.name)
    if verdict is not None:
        ex.headers.update(limit_headers(verdict))
    kind = ex.route.kind
    if kind is not None and deployment.kind != kind:
        operation = ex.route.operation
        raise wire_errors.operation_not_supported(
            model_family(deployment.model),
            UNSUPPORTED_NAME.get(operation) or OPERATION_TITLE.get(operation, operation),
        )


def _rate_limited(ex: Exchange, retry_after: float) -> wire_errors.AzureError:
    assert ex.version is not None
    operation = OPERATION_TITLE.get(ex.route.operation, ex.route.operation)
    return wire_errors.rate_limited(operation, ex.version.raw, retry_after)


def _base_headers(state: EmulatorState, request_id: str) -> dict[str, str]:
    return {
        "apim-request-id": request_id,
        "x-request-id": request_id,
        "x-ms-region": state.config.region,
    }
