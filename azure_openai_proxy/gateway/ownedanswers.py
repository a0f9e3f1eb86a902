"""What a resource answer names, for ownership (gateway/ownership.py): the ids a list
answer lists (and the list with only a key's own), a created response's output items,
the thread a run made with it names (`threads/runs`), and which response or
conversation an answer holds the items of. Pure: answers in, ids out.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["filtered", "is_list", "item_holder", "list_ids", "listed_ids", "output_item_ids",
           "run_thread_id"]

# Collections whose GET lists objects created at the top level.
_LISTS = frozenset({"files", "batches", "vector_stores", "assistants", "fine_tuning/jobs",
                    "responses", "threads", "uploads", "conversations",
                    "chat/completions"})


def is_list(method: str, operation: str) -> bool:
    return method == "GET" and operation in _LISTS


def list_ids(raw: bytes) -> tuple[dict[str, Any], list[str]] | None:
    """A list answer, parsed, and the ids it lists (None: not a list answer)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        return None
    ids = [item["id"] for item in answer["data"]
           if isinstance(item, dict) and isinstance(item.get("id"), str)]
    return answer, ids


def filtered(answer: dict[str, Any], kept: set[str], cursor: str | None = None) -> bytes:
    """The list answer with only the objects whose id is in `kept`; left with none, its
    `last_id` is `cursor` (Azure's last item, when more follow: to page on from)."""
    data = [item for item in answer["data"]
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"] in kept]
    answer["data"] = data
    if "first_id" in answer:
        answer["first_id"] = data[0]["id"] if data else None
    if "last_id" in answer or (cursor is not None and not data):
        answer["last_id"] = data[-1]["id"] if data else cursor
    return orjson.dumps(answer)


def output_item_ids(raw: bytes) -> list[str]:
    """The ids of a created response's `output` items (messages, function calls,
    reasoning...), which a later request may name in an `item_reference`."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    output = answer.get("output") if isinstance(answer, dict) else None
    return [item["id"] for item in output if isinstance(item, dict)
            and isinstance(item.get("id"), str) and item["id"]] if isinstance(
        output, list) else []


def run_thread_id(raw: bytes) -> str | None:
    """The `thread_id` of a run's JSON answer (`threads/runs`: the thread it made)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    made = answer.get("thread_id") if isinstance(answer, dict) else None
    return made if isinstance(made, str) and made else None


def item_holder(method: str, operation: str) -> str | None:
    """The response or conversation whose items this answer holds, or None: a response
    read (`GET responses/{id}`: its output, e.g. a background one's once done), its
    input items listed, a conversation's items added or listed."""
    parts = operation.split("/")
    if len(parts) == 2 and parts[0] == "responses" and method == "GET":
        return parts[1]
    if len(parts) != 3:
        return None
    if (parts[0], parts[2]) == ("responses", "input_items") and method == "GET":
        return parts[1]
    if (parts[0], parts[2]) == ("conversations", "items") and method in ("GET", "POST"):
        return parts[1]
    return None


def listed_ids(raw: bytes) -> list[str]:
    """The ids a list answer lists ([]: not a list answer)."""
    listed = list_ids(raw)
    return [] if listed is None else listed[1]
