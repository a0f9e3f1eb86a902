from __future__ import annotations

import itertools
import json
from typing import Any

from azure_openai_proxy.emulator.config import load_emulator_config
from azure_openai_proxy.emulator.ops_store import model_objects, run_batch_line
from azure_openai_proxy.emulator.storage import Stores


def stores() -> Stores:
    counter = itertools.count(1)
    return Stores(new_id=lambda prefix: f"{prefix}{next(counter)}", clock=lambda: 1000)


def echo(item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if item["body"].get("fail"):
        return 400, {"error": {"message": "no"}}
    return 200, {"echo": item["body"]}


def test_files() -> None:
    store = stores()
    meta = store.add_file("a.jsonl", "batch", b"abc")
    assert meta == {"object": "file", "id": "file-1", "purpose": "batch", "filename": "a.jsonl",
                    "bytes": 3, "created_at": 1000, "status": "processed", "status_details": None}
    assert store.files["file-1"].content == b"abc"


def test_batch_lifecycle_runs_lines_into_output_and_error_files() -> None:
    store = stores()
    lines = [{"custom_id": "a", "body": {"x": 1}}, {"custom_id": "b", "body": {"fail": True}}]
    source = store.add_file("in.jsonl", "batch", "\n".join(map(json.dumps, lines)).encode()
                            + b"\nnot json\n")
    batch = store.create_batch({"input_file_id": source["id"], "endpoint": "/chat/completions"})
    assert batch["status"] == "validating" and batch["expires_at"] == 1000 + 86400
    done = store.advance_batch(batch["id"], echo)
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    output = json.loads(store.files[done["output_file_id"]].content)
    assert output["custom_id"] == "a" and output["response"]["body"] == {"echo": {"x": 1}}
    errors = store.files[done["error_file_id"]].content.splitlines()
    assert len(errors) == 2
    assert store.advance_batch(batch["id"], echo)["status"] == "completed"
    assert store.cancel_batch(batch["id"])["status"] == "completed"  # too late to cancel


def test_cancel_before_running() -> None:
    store = stores()
    batch = store.create_batch({"input_file_id": "file-x", "endpoint": "/embeddings"})
    assert store.cancel_batch(batch["id"])["status"] == "cancelling"
    cancelled = store.advance_batch(batch["id"], echo)
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] == 1000


def test_run_batch_line_uses_the_named_deployment() -> None:
    config = load_emulator_config(None)
    status, body = run_batch_line(config, {"url": "/v1/chat/completions", "body": {
        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}})
    assert status == 200 and body["model"] == "gpt-4o-2024-08-06"
    status, body = run_batch_line(config, {"url": "/embeddings", "body": {
        "model": "text-embedding-3-small", "input": "x"}})
    assert status == 200 and len(body["data"][0]["embedding"]) == 1536
    status, body = run_batch_line(config, {"url": "/chat/completions", "body": {
        "model": "gpt-4o", "messages": []}})
    assert status == 400 and body["error"]["code"] == "empty_array"
    status, body = run_batch_line(config, {"url": "/embeddings", "body": {
        "model": "gpt-4o", "input": "x"}})
    assert status == 400 and body["error"]["code"] == "OperationNotSupported"


def test_model_objects_are_unique_per_model() -> None:
    models = model_objects(load_emulator_config(None))
    ids = [m["id"] for m in models]
    assert len(ids) == len(set(ids)) and "whisper-001" in ids
    assert all(m["object"] == "model" and m["owned_by"] == "system" for m in models)
