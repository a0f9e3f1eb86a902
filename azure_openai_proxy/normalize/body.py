"""Non-streamed response bodies (chat, completions, embeddings, responses) made OpenAI's.

`normalize_body` writes the client's model name back into `model` and keeps or strips
Azure's content-filter fields (top-level `prompt_filter_results`/`prompt_annotations`;
`content_filter_results`/`content_filter_offsets` on each choice, and on each image in
`data`). It returns the very same bytes object when nothing changes, without parsing
at all when the settings ask for no change, and never raises: junk goes back unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["normalize_answer", "normalize_body"]

_TOP_LEVEL_FIELDS = ("prompt_filter_results", "prompt_annotations")
_ITEM_FIELDS = ("content_filter_results", "content_filter_offsets", "prompt_filter_results")


def normalize_body(body: bytes, *, client_model: str | None, keep_azure_fields: bool) -> bytes:
    """Return `body` with `model` = `client_model` (if set) and Azure fields kept or not."""
    if client_model is None and keep_azure_fields:
        return body
    if keep_azure_fields and b'"model"' not in body:
        return body
    return _rewrite(body, client_model, keep_azure_fields)[0]


def normalize_answer(
    body: bytes, *, client_model: str | None, keep_azure_fields: bool
) -> tuple[bytes, dict[str, Any] | None]:
    """`normalize_body` and the answer's `usage`, from one parse (the hot path's version).
    With a model to restore the body is parsed anyway, so it is not scanned first."""
    if client_model is None and keep_azure_fields and b'"usage"' not in body:
        return body, None
    return _rewrite(body, client_model, keep_azure_fields)


def _rewrite(
    body: bytes, client_model: str | None, keep_azure_fields: bool
) -> tuple[bytes, dict[str, Any] | None]:
    """Parse once: the rewritten body (the same object if unchanged) and its usage."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, None
    if not isinstance(obj, dict):
        return body, None
    usage = obj.get("usage")
    changed = False
    if client_model is not None and isinstance(obj.get("model"), str):
        changed = obj["model"] != client_model
        obj["model"] = client_model
    if not keep_azure_fields:
        changed = _strip(obj) or changed
    return (orjson.dumps(obj) if changed else body), (usage if isinstance(usage, dict) else None)


def _strip(obj: dict[str, Any]) -> bool:
    changed = False
    for key in _TOP_LEVEL_FIELDS:
        if key in obj:
            del obj[key]
            changed = True
    for list_key in ("choices", "data"):
        items = obj.get(list_key)
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, dict):
                for key in _ITEM_FIELDS:
                    if key in item:
                        del item[key]
                        changed = True
    return changed
