"""The operation table: which handler answers each route, and what it costs on arrival."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from azure_openai_proxy.emulator import (
    assistant_routes,
    assistants,
    conversations,
    graders,
    ops_media,
    ops_store,
    ops_text,
    realtime_ws,
    responses_tools,
    stored_chat,
)
from azure_openai_proxy.emulator.exchange import Exchange
from azure_openai_proxy.emulator.generation import prompt_texts
from azure_openai_proxy.emulator.ratelimit import estimate_cost
from azure_openai_proxy.emulator.responses_api import input_text
from azure_openai_proxy.emulator.textgen import messages_text

Handler = Callable[[Exchange], Awaitable[web.StreamResponse]]

HANDLERS: dict[str, Handler] = {
    "chat": ops_text.chat,
    "completions": ops_text.completions,
    "embeddings": ops_text.embeddings,
    "responses": ops_text.responses_create,
    "responses_compact": responses_tools.compact,
    "responses_input_tokens": responses_tools.input_tokens,
    "transcriptions": ops_media.transcriptions,
    "translations": ops_media.translations,
    "speech": ops_media.speech,
    "image_generations": ops_media.image_generations,
    "image_edits": ops_media.image_edits,
    "file_upload": ops_store.file_upload,
    "files": ops_store.files,
    "file": ops_store.file,
    "file_content": ops_store.file_content,
    "file_delete": ops_store.file_delete,
    "batch_create": ops_store.batch_create,
    "batch": ops_store.batch,
    "batches": ops_store.batches,
    "batch_cancel": ops_store.batch_cancel,
    "models": ops_store.models,
    "model": ops_store.model,
    "response": ops_store.response,
    "response_delete": ops_store.response_delete,
    "response_cancel": ops_store.response_cancel,
    "response_input_items": ops_store.response_input_items,
    "realtime": realtime_ws.connect,
    "grader_run": graders.run,
    "grader_validate": graders.validate,
    "conversation_create": conversations.create,
    "conversation": conversations.retrieve,
    "conversation_update": conversations.update,
    "conversation_delete": conversations.delete,
    "conversation_items": conversations.items,
    "conversation_items_create": conversations.items_create,
    "chat_stored_list": stored_chat.listed,
    "chat_stored": stored_chat.retrieve,
    "chat_stored_update": stored_chat.update,
    "chat_stored_delete": stored_chat.delete,
    "chat_stored_messages": stored_chat.messages,
    **assistants.HANDLERS,
}
JSON_OPERATIONS = frozenset(
    {"chat", "completions", "embeddings", "responses", "speech", "image_generations",
     "batch_create", "responses_compact", "responses_input_tokens", "grader_run",
     "grader_validate", "conversation_create", "conversation_update",
     "conversation_items_create", "chat_stored_update"}
) | assistant_routes.JSON_OPERATIONS
MULTIPART_OPERATIONS = frozenset({"transcriptions", "translations", "image_edits", "file_upload"})


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def cost_of(ex: Exchange) -> int:
    """The token cost Azure estimates on arrival: prompt characters / 4 + max tokens."""
    body, natural = ex.body, ex.config.completion_tokens
    operation = ex.route.operation
    try:
        if operation == "chat":
            most = _int(body.get("max_completion_tokens") or body.get("max_tokens"), natural)
            return estimate_cost(len(messages_text(body.get("messages") or [])),
                                 most * max(1, _int(body.get("n"), 1)))
        if operation == "completions":
            chars = sum(map(len, prompt_texts(body.get("prompt", ""))))
            copies = max(_int(body.get("n"), 1), _int(body.get("best_of"), 1))
            return estimate_cost(chars, _int(body.get("max_tokens"), 16) * copies)
        if operation == "embeddings":
            return estimate_cost(len(str(body.get("input", ""))), 0)
        if operation in ("responses", "responses_compact"):
            most = _int(body.get("max_output_tokens"), natural)
            return estimate_cost(len(input_text(body)), most)
    except Exception:  # a malformed body costs nothing here; its handler rejects it
        return 0
    return 0
