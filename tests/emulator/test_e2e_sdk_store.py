"""Files, batches and models through the official SDK's Azure client."""

from __future__ import annotations

import json

import pytest
from openai import AzureOpenAI, NotFoundError

from tests.emulator.conftest import KEY, call
from tests.support import ServerThread

VERSION = "2025-03-01-preview"


def azure(srv: ServerThread) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=srv.url, api_key=KEY, api_version=VERSION, max_retries=0)


def batch_input() -> bytes:
    lines = [
        {"custom_id": "one", "method": "POST", "url": "/chat/completions",
         "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}},
        {"custom_id": "two", "method": "POST", "url": "/chat/completions",
         "body": {"model": "no-such-deployment", "messages": []}},
    ]
    return b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"


def test_file_lifecycle(srv: ServerThread) -> None:
    client = azure(srv)
    raw = client.files.with_raw_response.create(file=("in.jsonl", batch_input()), purpose="batch")
    assert raw.status_code == 201
    uploaded = raw.parse()
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(batch_input())
    assert uploaded.filename == "in.jsonl" and uploaded.purpose == "batch"
    assert uploaded.id in [f.id for f in client.files.list().data]
    assert client.files.retrieve(uploaded.id).status == "processed"
    assert client.files.content(uploaded.id).read() == batch_input()
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(NotFoundError):
        client.files.retrieve(uploaded.id)


def test_batch_runs_and_reports_results(srv: ServerThread) -> None:
    client = azure(srv)
    source = client.files.create(file=("in.jsonl", batch_input()), purpose="batch")
    batch = client.batches.create(input_file_id=source.id, endpoint="/chat/completions",
                                  completion_window="24h")
    assert batch.status == "validating" and batch.input_file_id == source.id
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.total == 2
    assert done.request_counts.completed == 1 and done.request_counts.failed == 1
    output = client.files.content(done.output_file_id or "").read().decode()
    record = json.loads(output.strip())
    assert record["custom_id"] == "one" and record["response"]["status_code"] == 200
    assert record["response"]["body"]["choices"][0]["message"]["content"]
    errors = client.files.content(done.error_file_id or "").read().decode()
    assert json.loads(errors)["response"]["body"]["error"]["code"] == "DeploymentNotFound"
    assert batch.id in [b.id for b in client.batches.list().data]


def test_batch_cancel(srv: ServerThread) -> None:
    client = azure(srv)
    source = client.files.create(file=("in.jsonl", batch_input()), purpose="batch")
    batch = client.batches.create(input_file_id=source.id, endpoint="/chat/completions",
                                  completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    assert client.batches.retrieve(batch.id).status == "cancelled"


def test_batch_needs_an_uploaded_file(srv: ServerThread) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError):
        azure(srv).batches.create(input_file_id="file-missing", endpoint="/chat/completions",
                                  completion_window="24h")


def test_models(srv: ServerThread) -> None:
    models = azure(srv).models.list()
    ids = [m.id for m in models.data]
    assert "gpt-4o-2024-08-06" in ids and "o3-mini-2025-01-31" in ids
    one = azure(srv).models.retrieve("gpt-4o-2024-08-06")
    assert one.id == "gpt-4o-2024-08-06" and (one.model_extra or {})["status"] == "succeeded"
    raw = call(srv.url, "GET", f"/openai/models?api-version={VERSION}",
               headers={"api-key": KEY})
    assert raw.json()["object"] == "list"
