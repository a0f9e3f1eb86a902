"""Two Responses operations besides create: counting a request's input tokens
(`POST responses/input_tokens`, free: the model does not run) and compacting a
conversation (`POST responses/compact`, a billed model call whose answer carries usage).

    input_tokens -> {"object": "response.input_tokens", "input_tokens": N}
    compact      -> {"id": "resp_...", "object": "response.compaction", "created_at": T,
                     "output": [the input's user messages..., {"type": "compaction",
                     "encrypted_content": ...}], "usage": {...}}

A `previous_response_id` names a stored response (its input and output are read again,
as a chained create's are); one that is not stored is a 400.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from azure_openai_proxy.emulator import validation, wire_errors
from azure_openai_proxy.emulator.exchange import Exchange, new_id
from azure_openai_proxy.emulator.responses_api import input_text
from azure_openai_proxy.emulator.textgen import count_tokens

# What a compaction writes, at most: a summary far shorter than what it compacts.
_COMPACTION_TOKENS = 64


async def input_tokens(ex: Exchange) -> web.StreamResponse:
    model = ex.body.get("model")
    if model is not None and (not isinstance(model, str) or ex.config.deployment(model) is None):
        raise wire_errors.deployment_not_found()
    return ex.json({"object": "response.input_tokens", "input_tokens": _read_tokens(ex)})


async def compact(ex: Exchange) -> web.StreamResponse:
    assert ex.deployment is not None and ex.version is not None
    body = ex.body
    if "input" not in body and "previous_response_id" not in body:
        raise validation.missing("input", ex.version)
    read = _read_tokens(ex)
    written = min(_COMPACTION_TOKENS, max(1, read // 4))
    summary = base64.b64encode(input_text(body).encode()[:256]).decode()
    output = [*_user_messages(body.get("input")),
              {"id": new_id("cmp_"), "type": "compaction", "encrypted_content": summary}]
    await ex.think(written)
    return ex.json({
        "id": new_id("resp_"), "object": "response.compaction", "created_at": ex.created,
        "output": output,
        "usage": {"input_tokens": read, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": written, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": read + written},
    })


def _read_tokens(ex: Exchange) -> int:
    """The tokens the model reads: the body's input and instructions, plus a previous
    response's input and output (a stored one; else a 400)."""
    tokens = count_tokens(input_text(ex.body)) + 3
    previous = ex.body.get("previous_response_id")
    if previous is not None:
        stored = ex.state.stores.responses.get(previous) if isinstance(previous, str) else None
        if stored is None:
            raise wire_errors.invalid_request(
                f"Previous response with id '{previous}' not found.", "previous_response_id",
                "previous_response_not_found")
        usage = stored.get("usage") or {}
        tokens += int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
    return tokens


def _user_messages(items: Any) -> list[dict[str, Any]]:
    """The user's messages of `input`, kept as they are by a compaction."""
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    kept = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": "input_text", "text": content}]
            kept.append({"id": new_id("msg_"), "type": "message", "role": "user",
                         "status": "completed", "content": content})
    return kept
