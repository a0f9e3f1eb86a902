"""The ids of existing objects a resource request names (gateway/ownership.py checks
them as the calling key's own). Pure: a path and a body in, ids out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.gateway.affinity import ids_referenced, item_references

__all__ = ["object_ids"]

# `threads/runs` creates a thread and a run; `responses/compact` compacts a conversation
# and `responses/input_tokens` counts a request's input: none names an object.
_NOT_IDS = frozenset({"threads/runs", "responses/compact", "responses/input_tokens"})


def object_ids(operation: str, body: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """The ids of existing objects a resource request names: those the key must own (the
    path's first, every reference in the body), and the sub-objects its path names past
    the first (`threads/{id}/runs/{run}`, `vector_stores/{id}/files/{file}`): those live
    inside the first, so they are refused only when known to be another key's."""
    parts = operation.split("/")
    if parts[:2] == ["chat", "completions"]:  # a stored chat completion: its id, no inner
        return ids_referenced(operation, body, strict=True), []
    if parts[0] == "fine_tuning":
        # A job, or a checkpoint (`checkpoints/{ft:...}/permissions`): the key's when it
        # owns the job that made it (gateway/finetuned.py).
        owned = parts[1:2] in (["jobs"], ["checkpoints"])
        named = [parts[2]] if len(parts) >= 3 and owned else []
        inner = parts[4::2] if owned else parts[2::2]
        return named + ids_referenced("", body, strict=True), inner
    named = ids_referenced(operation, body, strict=True)
    if operation in _NOT_IDS:  # exactly: below them (`responses/compact/x`) is an id's path
        named = named[1:]
    return named + item_references(body), parts[3::2]
