"""Handlers for the stored objects: files, batches, model listings, stored responses."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from azure_openai_proxy.emulator import frames, validation, wire_errors
from azure_openai_proxy.emulator.config import EmulatorConfig
from azure_openai_proxy.emulator.exchange import Exchange, new_id
from azure_openai_proxy.emulator.generation import RequestFacts, plan_chat, plan_completions
from azure_openai_proxy.emulator.multipart import field
from azure_openai_proxy.emulator.ops_text import embeddings_body
from azure_openai_proxy.emulator.storage import cursor_page
from azure_openai_proxy.emulator.versions import v1_version

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings", "/responses")
_CAPABILITIES = {
    "chat": {"chat_completion": True, "completion": False, "embeddings": False,
             "inference": True, "fine_tune": False},
    "completions": {"chat_completion": False, "completion": True, "embeddings": False,
                    "inference": True, "fine_tune": False},
    "embeddings": {"chat_completion": False, "completion": False, "embeddings": True,
                   "inference": True, "fine_tune": False},
}


def _file(ex: Exchange) -> Any:
    stored = ex.state.stores.files.get(ex.route.object_id or "")
    if stored is None:
        raise wire_errors.not_found_object("File", ex.route.object_id or "")
    return stored


async def file_upload(ex: Exchange) -> web.StreamResponse:
    files = ex.form.get("file")
    purpose = field(ex.form, "purpose")
    if not files:
        raise wire_errors.invalid_request(
            "Missing required parameter: 'file'.", "file", "missing_required_parameter"
        )
    if purpose not in PURPOSES:
        raise wire_errors.invalid_request(
            f"Invalid value for 'purpose': {purpose!r}. Supported values are: "
            + ", ".join(f"'{p}'" for p in PURPOSES) + ".", "purpose", "invalid_value",
        )
    meta = ex.state.stores.add_file(files[0].filename or "file", purpose, files[0].data)
    return ex.json(meta, status=201)


async def files(ex: Exchange) -> web.StreamResponse:
    data = [f.meta for f in ex.state.stores.files.values()]
    return ex.json({"object": "list", "data": data, "has_more": False})


async def file(ex: Exchange) -> web.StreamResponse:
    return ex.json(_file(ex).meta)


async def file_content(ex: Exchange) -> web.StreamResponse:
    return ex.raw(_file(ex).content, "application/octet-stream")


async def file_delete(ex: Exchange) -> web.StreamResponse:
    _file(ex)
    del ex.state.stores.files[ex.route.object_id or ""]
    return ex.json({"object": "file", "id": ex.route.object_id, "deleted": True})


def run_batch_line(config: EmulatorConfig, item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Answer one JSONL batch request as the deployment named in its body would."""
    body = item["body"]
    deployment = config.deployment(str(body.get("model")))
    if deployment is None:
        return 404, dict(wire_errors.deployment_not_found().body)
    url = str(item.get("url", "")).removeprefix("/v1")
    facts = RequestFacts(deployment, new_id(""), 0, "prompt_filter_results",
                         config.completion_tokens)
    try:
        if url == "/chat/completions" and deployment.kind == "chat":
            validation.check_chat(body, v1_version(None), deployment.model, deployment.reasoning)
            return 200, frames.chat_body(plan_chat(body, facts))
        if url == "/completions" and deployment.kind == "completions":
            return 200, frames.completions_body(plan_completions(body, facts))
        if url == "/embeddings" and deployment.kind == "embeddings":
            return 200, embeddings_body(body, deployment)
    except wire_errors.AzureError as error:
        return error.status, dict(error.body)
    return 400, dict(wire_errors.operation_not_supported(deployment.model, url).body)


def _batch_id(ex: Exchange) -> str:
    batch_id = ex.route.object_id or ""
    if batch_id not in ex.state.stores.batches:
        raise wire_errors.not_found_object("Batch", batch_id)
    return batch_id


async def batch_create(ex: Exchange) -> web.StreamResponse:
    assert ex.version is not None
    for name in ("input_file_id", "endpoint", "completion_window"):
        if name not in ex.body:
            raise validation.missing(name, ex.version)
    if ex.body["input_file_id"] not in ex.state.stores.files:
        raise wire_errors.invalid_request(
            f"File with id '{ex.body['input_file_id']}' not found.", "input_file_id"
        )
    if str(ex.body["endpoint"]).removeprefix("/v1") not in BATCH_ENDPOINTS:
        raise wire_errors.invalid_request(
            f"Invalid value: '{ex.body['endpoint']}'. Supported values are: "
            + ", ".join(f"'{e}'" for e in BATCH_ENDPOINTS) + ".", "endpoint", "invalid_value",
        )
    return ex.json(ex.state.stores.create_batch(ex.body))


async def batch(ex: Exchange) -> web.StreamResponse:
    config = ex.config
    batch_id = _batch_id(ex)
    return ex.json(ex.state.stores.advance_batch(batch_id, lambda i: run_batch_line(config, i)))


async def batches(ex: Exchange) -> web.StreamResponse:
    config, stores = ex.config, ex.state.stores
    data = [stores.advance_batch(b, lambda i: run_batch_line(config, i)) for b in stores.batches]
    data.reverse()  # newest first, as the service lists them
    return ex.json(cursor_page(data, ex.request.query))



async def batch_cancel(ex: Exchange) -> web.StreamResponse:
    return ex.json(ex.state.stores.cancel_batch(_batch_id(ex)))


def model_objects(config: EmulatorConfig) -> list[dict[str, Any]]:
    """One model object per underlying model of the configured deployments."""
    seen: dict[str, dict[str, Any]] = {}
    for deployment in config.deployments:
        seen.setdefault(deployment.model, {
            "id": deployment.model,
            "object": "model",
            "created": 1_700_000_000,
            "created_at": 1_700_000_000,
            "owned_by": "system",
            "status": "succeeded",
            "lifecycle_status": "generally-available",
            "capabilities": _CAPABILITIES.get(deployment.kind, {"inference": True}),
            "deprecation": {"inference": 1_900_000_000},
        })
    return list(seen.values())


async def models(ex: Exchange) -> web.StreamResponse:
    return ex.json({"object": "list", "data": model_objects(ex.config)})


async def model(ex: Exchange) -> web.StreamResponse:
    for item in model_objects(ex.config):
        if item["id"] == ex.route.object_id:
            return ex.json(item)
    raise wire_errors.not_found_object("Model", ex.route.object_id or "")


def _stored_response(ex: Exchange) -> dict[str, Any]:
    found = ex.state.stores.responses.get(ex.route.object_id or "")
    if found is None:
        raise wire_errors.not_found_object("Response", ex.route.object_id or "")
    return found


async def response(ex: Exchange) -> web.StreamResponse:
    found = _stored_response(ex)
    ex.state.stores.queued.discard(found["id"])  # read: done (as stored)
    if ex.request.query.get("stream") != "true":
        return ex.json(found)
    # A background response streamed again from its events, after `starting_after`.
    events = ex.state.stores.response_events.get(found["id"])
    if events is None:  # (Azure's message for it is not known: this one is ours)
        raise wire_errors.invalid_request(
            "Only a response created with background and stream can be streamed again.",
            "stream", "invalid_value")
    after = ex.request.query.get("starting_after", "-1")
    digits = after.removeprefix("-")  # int("--1"), int("²"), int() of 4,301 digits raise
    if not (digits.isdecimal() and len(digits) <= 18):
        raise validation.invalid_type("starting_after", "an integer", after)
    return await ex.stream(events[max(int(after) + 1, 0):])


async def response_cancel(ex: Exchange) -> web.StreamResponse:
    """A background response still queued is cancelled (no output, no usage); one done
    is answered as it is, as a second cancel is."""
    stores, found = ex.state.stores, _stored_response(ex)
    if not found["background"]:  # (Azure's message for it is not known: this one is ours)
        raise wire_errors.invalid_request(
            "Only a response created with background: true can be cancelled.", None,
            "invalid_value")
    if found["id"] in stores.queued:
        stores.queued.discard(found["id"])
        found = stores.responses[found["id"]] = {**found, "status": "cancelled",
                                                 "output": [], "usage": None}
    return ex.json(found)


async def response_input_items(ex: Exchange) -> web.StreamResponse:
    """The input items of a stored response, paged as a batch list is; `order` `desc`
    (the default: the last item first) or `asc`."""
    found = _stored_response(ex)
    order = ex.request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise wire_errors.invalid_request(
            f"Invalid 'order': {order!r}. Expected one of 'asc', 'desc'.", "order",
            "invalid_value")
    items = ex.state.stores.response_inputs.get(found["id"], [])
    return ex.json(cursor_page(items if order == "asc" else items[::-1], ex.request.query))


async def response_delete(ex: Exchange) -> web.StreamResponse:
    _stored_response(ex)
    stores, response_id = ex.state.stores, ex.route.object_id or ""
    del stores.responses[response_id]
    stores.response_events.pop(response_id, None)
    stores.response_inputs.pop(response_id, None)
    stores.queued.discard(response_id)
    return ex.json({"id": ex.route.object_id, "object": "response", "deleted": True})
