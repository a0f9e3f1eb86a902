"""A resource POST's JSON body is read, checked and sent as JSON whatever Content-Type
the client gave it (text/plain, a form's, none): Azure reads such a body as JSON (as
the emulator does), so a body the gateway passed on unread could name another key's
objects past the ownership check. The official `openai` SDK where it can send such a
header, raw HTTP for the rest, through the gateway to the emulator."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import HELLO, Governed, governed_gateway
from tests.support import ServerThread

# Content types a JSON body may come with from a hand-written client: curl's `-d`
# default, a plain string's, a charset, and none at all.
CONTENT_TYPES = ("text/plain", "text/plain; charset=utf-8",
                 "application/x-www-form-urlencoded", "application/octet-stream", None)


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def _owned_by_a(governed: Governed) -> tuple[str, str, str]:
    """Key a's response and batch input file; key b's secret (an allow-list: restricted)."""
    _, a_secret = governed.key("a", models=("gpt-4o",))
    _, b_secret = governed.key("b", models=("gpt-4o",))
    a = governed.client(a_secret)
    response = a.responses.create(model="gpt-4o", input="mine")
    line = orjson.dumps({"custom_id": "1", "method": "POST", "url": "/chat/completions",
                         "body": {"model": "gpt-4o", "messages": HELLO}}) + b"\n"
    file = a.files.create(file=("b.jsonl", io.BytesIO(line), "application/jsonl"),
                          purpose="batch")
    return response.id, file.id, b_secret


def _post(governed: Governed, secret: str, path: str, body: dict[str, Any],
          content_type: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.post(governed.server.url + path, content=orjson.dumps(body),
                      headers=headers, timeout=30)


def _not_found(answer: httpx.Response, object_id: str) -> None:
    assert answer.status_code == 404, answer.text
    assert answer.json() == {"error": {
        "message": f"No such object: {object_id}", "type": "invalid_request_error",
        "param": "id", "code": None}}


def test_the_sdk_with_a_text_content_type_cannot_name_another_keys_objects(
        governed: Governed, emulator: Emulator) -> None:
    response_id, file_id, b_secret = _owned_by_a(governed)
    b = governed.client(b_secret)
    seen = len(emulator.requests())
    plain = {"Content-Type": "text/plain"}
    with pytest.raises(openai.NotFoundError) as refused:
        b.responses.create(model="gpt-4o", input="x", previous_response_id=response_id,
                           extra_headers=plain)
    assert refused.value.body["message"] == f"No such object: {response_id}"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as refused:
        b.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                         completion_window="24h", extra_headers=plain)
    assert refused.value.body["message"] == f"No such object: {file_id}"  # type: ignore[index]
    assert len(emulator.requests()) == seen  # refused before Azure was called


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_raw_http_with_any_content_type_cannot_name_another_keys_objects(
        governed: Governed, emulator: Emulator, content_type: str | None) -> None:
    response_id, file_id, b_secret = _owned_by_a(governed)
    seen = len(emulator.requests())
    _not_found(_post(governed, b_secret, "/v1/responses",
                     {"model": "gpt-4o", "input": "x", "previous_response_id": response_id},
                     content_type), response_id)
    _not_found(_post(governed, b_secret, "/v1/responses",
                     {"model": "gpt-4o", "input": [{"type": "item_reference", "id": "msg_x"}],
                      "previous_response_id": response_id}, content_type), response_id)
    _not_found(_post(governed, b_secret, "/v1/batches",
                     {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}, content_type), file_id)
    assert len(emulator.requests()) == seen


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_the_owner_still_may_and_azure_gets_json(
        governed: Governed, emulator: Emulator, content_type: str | None) -> None:
    """What was checked is what is sent, as JSON: Azure is told `application/json`."""
    _, a_secret = governed.key("a", models=("gpt-4o",))
    first = _post(governed, a_secret, "/v1/responses", {"model": "gpt-4o", "input": "hi"},
                  content_type)
    assert first.status_code == 200, first.text
    chained = _post(governed, a_secret, "/v1/responses",
                    {"model": "gpt-4o", "input": "and?", "previous_response_id": first.json()["id"]},
                    content_type)
    assert chained.status_code == 200, chained.text
    sent = emulator.last()
    assert sent["headers"]["content-type"] == "application/json"
    assert sent["json"]["previous_response_id"] == first.json()["id"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_gets_a_400_and_is_not_sent(
        governed: Governed, emulator: Emulator, content_type: str) -> None:
    _, secret = governed.key("a", models=("gpt-4o",))
    seen = len(emulator.requests())
    for body in (b"model=gpt-4o&input=hi", b"[1, 2]"):
        answer = httpx.post(governed.server.url + "/v1/responses", content=body, timeout=30,
                            headers={"Authorization": f"Bearer {secret}",
                                     "Content-Type": content_type})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["type"] == "invalid_request_error"
    assert len(emulator.requests()) == seen


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=x",
                                          "multipart/mixed; boundary=x"])
def test_a_json_body_said_to_be_multipart_cannot_name_another_keys_objects(
        governed: Governed, emulator: Emulator, content_type: str) -> None:
    """Only a file upload (`files`, `uploads/{id}/parts`) takes a form; before, any
    resource body said to be multipart went to Azure unread, and the emulator (reading
    `responses` as JSON whatever its type) chained from key a's response for key b."""
    response_id, _, b_secret = _owned_by_a(governed)
    seen = len(emulator.requests())
    _not_found(_post(governed, b_secret, "/v1/responses",
                     {"model": "gpt-4o", "input": "x", "previous_response_id": response_id},
                     content_type), response_id)
    assert len(emulator.requests()) == seen
    answer = _post(governed, b_secret, "/v1/responses", {"model": "gpt-4o", "input": "x"},
                   content_type)
    assert answer.status_code == 200, answer.text  # read and sent as JSON, as any other
    assert emulator.last()["headers"]["content-type"] == "application/json"
    form = httpx.post(governed.server.url + "/v1/responses", timeout=30,
                      headers={"Authorization": f"Bearer {b_secret}"},
                      files={"model": (None, "gpt-4o"), "input": (None, "x")})
    assert form.status_code == 400, form.text  # a real form where JSON is taken: not JSON
    assert form.json()["error"]["type"] == "invalid_request_error"


def test_a_file_upload_is_still_a_form(governed: Governed, emulator: Emulator) -> None:
    _, secret = governed.key("a", models=("gpt-4o",))
    uploaded = governed.client(secret).files.create(
        file=("notes.txt", io.BytesIO(b"hello"), "text/plain"), purpose="assistants")
    assert uploaded.bytes == 5
    assert emulator.last()["headers"]["content-type"].startswith("multipart/form-data")
