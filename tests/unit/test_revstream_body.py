"""Review of advstream's `normalize_answer` (branch revstream): what an OpenAI SDK reads
as a JSON object is never refused as junk."""

from __future__ import annotations

import json

import pytest

from azure_openai_proxy.normalize.body import normalize_answer

CHAT = b'{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06"}'


@pytest.mark.parametrize(("model", "keep"), [("gpt-4o", True), ("gpt-4o", False),
                                             (None, True), (None, False)])
def test_a_json_object_after_a_utf8_byte_order_mark_is_not_refused(
        model: str | None, keep: bool) -> None:
    """The Python SDK's `json.loads(bytes)` (httpx's `Response.json`) and a browser's
    `response.json()` both skip a UTF-8 BOM; at eadcc7a the answer was a 502."""
    body = b"\xef\xbb\xbf" + CHAT
    assert isinstance(json.loads(body), dict)  # what the SDK makes of it
    answer, usage = normalize_answer(body, client_model=model, keep_azure_fields=keep)
    assert usage is None
    assert json.loads(answer)["id"] == "chatcmpl-1"
