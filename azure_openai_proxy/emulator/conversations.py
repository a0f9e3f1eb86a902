"""The Conversations API, which Azure serves on its v1 API alone (`/openai/v1/
conversations...`; the dated path is its 404 on every version): a conversation made,
read, its metadata updated, deleted; its items added and listed (newest first, as
OpenAI lists them)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.exchange import Exchange
from azure_openai_proxy.emulator.storage import deleted

_MAX_ITEMS = 20  # items added at once, as OpenAI allows


def _conversation(ex: Exchange) -> dict[str, Any]:
    found = ex.state.stores.conversations.get(ex.route.object_id or "")
    if found is None:
        raise wire_errors.not_found_object("Conversation", ex.route.object_id or "")
    return found


def _items(ex: Exchange, conversation_id: str) -> list[dict[str, Any]]:
    items = ex.body.get("items") or []
    if not isinstance(items, list) or len(items) > _MAX_ITEMS or not all(
            isinstance(item, dict) for item in items):
        raise wire_errors.invalid_request(
            f"'items' must be a list of at most {_MAX_ITEMS} objects.", "items", "invalid_value")
    stores = ex.state.stores
    made = [{**item, "id": stores.new_id("msg_"), "status": "completed"} for item in items]
    stores.conversation_items.setdefault(conversation_id, []).extend(made)
    return made


async def create(ex: Exchange) -> web.StreamResponse:
    stores = ex.state.stores
    conversation_id = stores.new_id("conv_")
    conversation = {"id": conversation_id, "object": "conversation",
                    "created_at": stores.clock(), "metadata": ex.body.get("metadata") or {}}
    _items(ex, conversation_id)  # refused items: no conversation made
    stores.conversations[conversation_id] = conversation
    return ex.json(conversation)


async def retrieve(ex: Exchange) -> web.StreamResponse:
    return ex.json(_conversation(ex))


async def update(ex: Exchange) -> web.StreamResponse:
    conversation = _conversation(ex)
    conversation["metadata"] = ex.body.get("metadata") or {}
    return ex.json(conversation)


async def delete(ex: Exchange) -> web.StreamResponse:
    stores = ex.state.stores
    return ex.json(deleted(stores.conversations, stores.conversation_items,
                           _conversation(ex)["id"], "conversation.deleted"))


async def items_create(ex: Exchange) -> web.StreamResponse:
    made = _items(ex, _conversation(ex)["id"])
    return ex.json({"object": "list", "data": made, "has_more": False,
                    "first_id": made[0]["id"] if made else None,
                    "last_id": made[-1]["id"] if made else None})


async def items(ex: Exchange) -> web.StreamResponse:
    listed = list(reversed(ex.state.stores.conversation_items.get(_conversation(ex)["id"], [])))
    return ex.json({"object": "list", "data": listed, "has_more": False,
                    "first_id": listed[0]["id"] if listed else None,
                    "last_id": listed[-1]["id"] if listed else None})
