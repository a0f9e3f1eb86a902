"""Stored chat completions: a chat made with `store: true` (streamed or not) is kept with
its `metadata` and request messages, and served on the v1 API (`/openai/v1/chat/
completions...`; Azure's REST reference lists no dated path for them): listed (oldest
first by default, as OpenAI lists them; `order`; `limit`/`after` paged; filtered by
`model` and `metadata[k]`), read, its metadata updated (POST), deleted, its messages
listed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.exchange import Exchange
from azure_openai_proxy.emulator.storage import cursor_page, deleted


def keep(ex: Exchange, answer: Mapping[str, Any]) -> None:
    """Keep a chat answer whose request said `store: true`."""
    if ex.body.get("store") is not True:
        return
    stores, completion_id = ex.state.stores, answer["id"]
    stores.chat_completions[completion_id] = {
        **answer, "metadata": ex.body.get("metadata") or {}, "request_id": completion_id}
    messages = ex.body.get("messages") or []
    stores.chat_messages[completion_id] = [
        {**message, "id": f"{completion_id}-{n}"} for n, message in enumerate(messages)
        if isinstance(message, Mapping)]


def _stored(ex: Exchange) -> dict[str, Any]:
    found = ex.state.stores.chat_completions.get(ex.route.object_id or "")
    if found is None:
        raise wire_errors.not_found_object("Chat completion", ex.route.object_id or "")
    return found


def _order(ex: Exchange, default: str) -> str:
    order = ex.request.query.get("order", default)
    if order not in ("asc", "desc"):
        raise wire_errors.invalid_request(
            f"Invalid 'order': {order!r}. Expected one of 'asc', 'desc'.", "order",
            "invalid_value")
    return order


async def listed(ex: Exchange) -> web.StreamResponse:
    query = ex.request.query
    wanted = {name[9:-1]: value for name, value in query.items()
              if name.startswith("metadata[") and name.endswith("]")}
    data = [c for c in ex.state.stores.chat_completions.values()
            if ("model" not in query or c["model"] == query["model"])
            and all(c["metadata"].get(k) == v for k, v in wanted.items())]
    if _order(ex, "asc") == "desc":
        data.reverse()
    return ex.json(cursor_page(data, query))


async def retrieve(ex: Exchange) -> web.StreamResponse:
    return ex.json(_stored(ex))


async def update(ex: Exchange) -> web.StreamResponse:
    found = _stored(ex)
    metadata = ex.body.get("metadata")
    if not isinstance(metadata, dict):
        raise wire_errors.invalid_request(
            "Missing required parameter: 'metadata'.", "metadata", "missing_required_parameter")
    found["metadata"] = metadata
    return ex.json(found)


async def delete(ex: Exchange) -> web.StreamResponse:
    stores = ex.state.stores
    return ex.json(deleted(stores.chat_completions, stores.chat_messages, _stored(ex)["id"],
                           "chat.completion.deleted"))


async def messages(ex: Exchange) -> web.StreamResponse:
    kept = ex.state.stores.chat_messages.get(_stored(ex)["id"], [])
    ordered = kept if _order(ex, "asc") == "asc" else kept[::-1]
    return ex.json(cursor_page(ordered, ex.request.query))
