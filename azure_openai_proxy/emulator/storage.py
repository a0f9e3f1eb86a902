"""In-memory files, batches and stored responses: the emulator's only mutable data.

Ids and times come from the injected `new_id` and `clock`, so the stores are tested
with plain values. Batches complete the first time they are read after creation
(`validating` -> `completed`), running each input line through `run_line`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from azure_openai_proxy.emulator import wire_errors

BatchRunner = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


@dataclass
class StoredFile:
    meta: dict[str, Any]
    content: bytes


@dataclass
class Stores:
    """Files, batches and responses of one emulator app."""

    new_id: Callable[[str], str]
    clock: Callable[[], int]
    files: dict[str, StoredFile] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A streamed background response's events (SSE bytes, tokens), to resume it from.
    response_events: dict[str, list[tuple[bytes, int]]] = field(default_factory=dict)
    # Background responses still queued (not read since made): a cancel stops them.
    queued: set[str] = field(default_factory=set)
    # Each stored response's input items, as `input_items` lists them (oldest first).
    response_inputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Conversations (the v1 API's alone) and their items, oldest first.
    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversation_items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Chat completions made with `store: true`, and their request messages.
    chat_completions: dict[str, dict[str, Any]] = field(default_factory=dict)
    chat_messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The Assistants API's (emulator/assistants.py): assistants, threads, each thread's
    # messages (oldest first) and runs (by id), each run's steps.
    assistants: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)
    thread_messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    thread_runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    run_steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = self.new_id("file-")
        meta = {
            "object": "file",
            "id": file_id,
            "purpose": purpose,
            "filename": filename,
            "bytes": len(content),
            "created_at": self.clock(),
            "status": "processed",
            "status_details": None,
        }
        self.files[file_id] = StoredFile(meta, content)
        return meta

    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        now = self.clock()
        batch = {
            "id": self.new_id("batch_"),
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86_400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = batch
        return dict(batch)

    def advance_batch(self, batch_id: str, run_line: BatchRunner) -> dict[str, Any]:
        """Move a batch one step on: validating -> completed, cancelling -> cancelled."""
        batch = self.batches[batch_id]
        now = self.clock()
        if batch["status"] == "cancelling":
            batch.update(status="cancelled", cancelled_at=now)
        elif batch["status"] == "validating":
            self._run(batch, run_line, now)
        return dict(batch)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        if batch["status"] in ("validating", "in_progress", "finalizing"):
            batch.update(status="cancelling", cancelling_at=self.clock())
        return dict(batch)

    def _run(self, batch: dict[str, Any], run_line: BatchRunner, now: int) -> None:
        source = self.files.get(batch["input_file_id"])
        outputs: list[bytes] = []
        errors: list[bytes] = []
        lines = [] if source is None else source.content.splitlines()
        for raw in filter(None, (line.strip() for line in lines)):
            try:
                item = orjson.loads(raw)
                status, body = run_line(item)
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
                item, status, body = {}, 400, {"error": {"message": "Invalid JSONL line"}}
            record = {
                "id": self.new_id("batch_req_"),
                "custom_id": item.get("custom_id") if isinstance(item, dict) else None,
                "response": {"status_code": status, "request_id": self.new_id(""), "body": body},
                "error": None,
            }
            (outputs if status == 200 else errors).append(orjson.dumps(record))
        counts = {"total": len(outputs) + len(errors), "completed": len(outputs),
                  "failed": len(errors)}
        batch.update(status="completed", in_progress_at=now, finalizing_at=now, completed_at=now,
                     request_counts=counts)
        if outputs:
            name = f"{batch['id']}_output.jsonl"
            batch["output_file_id"] = self.add_file(name, "batch_output",
                                                    b"\n".join(outputs) + b"\n")["id"]
        if errors:
            name = f"{batch['id']}_error.jsonl"
            batch["error_file_id"] = self.add_file(name, "batch_output",
                                                   b"\n".join(errors) + b"\n")["id"]


def cursor_page(data: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of a cursor-paginated list, as Azure pages batches: `limit` (1-100,
    default 20) items after the one `after` names (from the first when it names none
    listed), `has_more` when others follow."""
    limit = query.get("limit", "20")
    # int("²") raises, and int() of over 4,300 digits
    if not (limit.isdecimal() and len(limit) <= 3 and 1 <= int(limit) <= 100):
        raise wire_errors.invalid_request(
            f"Invalid 'limit': {limit!r}. Expected an integer between 1 and 100.",
            "limit", "invalid_value")
    after = query.get("after")
    start = next((n + 1 for n, item in enumerate(data) if item["id"] == after), 0)
    page = data[start:start + int(limit)]
    return {"object": "list", "data": page, "has_more": start + len(page) < len(data),
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None}


def deleted(objects: dict[str, dict[str, Any]], parts: dict[str, list[dict[str, Any]]],
            object_id: str, kind: str) -> dict[str, Any]:
    """Forget a stored object and what it holds (a conversation's items, a stored chat
    completion's messages); OpenAI's deletion answer for it."""
    del objects[object_id]
    parts.pop(object_id, None)
    return {"id": object_id, "object": kind, "deleted": True}
