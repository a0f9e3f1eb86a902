"""The emulator's Foundry family (Azure AI model inference): `/models/chat/completions`,
`/models/embeddings` and `/models/info`, over raw HTTP and the plain OpenAI SDK."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from azure_openai_proxy.emulator import mask_secret
from tests.emulator.conftest import (
    ENTRA,
    KEY,
    add_fault,
    admin_requests,
    call,
    hello,
    sse_data,
)
from tests.support import ServerThread

FOUNDRY = "2024-05-01-preview"
AUTH = {"api-key": KEY}
CHAT = f"/models/chat/completions?api-version={FOUNDRY}"
EMBEDDINGS = f"/models/embeddings?api-version={FOUNDRY}"


def test_chat_with_the_model_in_the_body(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", CHAT, hello(model="gpt-4o"), AUTH)
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert body["model"] == "gpt-4o-2024-08-06"
    entry = admin_requests(srv.url)[-1]
    assert (entry["path"], entry["deployment"], entry["status"]) == (
        "/models/chat/completions", "gpt-4o", 200)
    assert entry["query_params"] == {"api-version": [FOUNDRY]}
    assert entry["headers"]["api-key"] == mask_secret(KEY)


def test_streamed_chat_ends_with_done(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", CHAT, hello(model="gpt-4o", stream=True), AUTH)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    frames = sse_data(reply.body)
    assert frames[-1] == "[DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for frame in frames[:-1] for choice in json.loads(frame)["choices"]
    )
    assert text


def test_embeddings(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", EMBEDDINGS,
                 {"model": "text-embedding-3-small", "input": ["a", "b"]}, AUTH)
    assert reply.status == 200, reply.body
    assert [item["index"] for item in reply.json()["data"]] == [0, 1]


def test_model_info_names_the_model(srv: ServerThread) -> None:
    reply = call(srv.url, "GET", f"/models/info?api-version={FOUNDRY}", None,
                 {**AUTH, "x-ms-model-mesh-model-name": "text-embedding-3-small"})
    assert reply.status == 200
    assert reply.json() == {"model_name": "text-embedding-3-small", "model_type": "embeddings",
                            "model_provider_name": "OpenAI"}


@pytest.mark.parametrize("query", ["", "?api-version=2099-01-01", "?api-version=v1"])
def test_a_missing_or_unknown_api_version_is_a_400(srv: ServerThread, query: str) -> None:
    reply = call(srv.url, "POST", "/models/chat/completions" + query, hello(model="gpt-4o"), AUTH)
    assert reply.status == 400
    assert reply.json() == {"error": {"code": "BadRequest", "message": "API version not supported"}}


def test_an_unknown_or_missing_model_gets_foundrys_errors(srv: ServerThread) -> None:
    unknown = call(srv.url, "POST", CHAT, hello(model="Llama-9"), AUTH)
    assert unknown.status == 404
    assert unknown.json()["error"]["code"] == "unknown_model"
    assert unknown.json()["error"]["message"] == "Unknown model: Llama-9"
    missing = call(srv.url, "POST", CHAT, hello(), AUTH)
    assert missing.status == 400 and missing.json()["error"]["code"] == "no_model_name"


def test_chat_on_an_embeddings_model_is_operation_not_supported(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", CHAT, hello(model="text-embedding-3-small"), AUTH)
    assert reply.status == 400 and reply.json()["error"]["code"] == "OperationNotSupported"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"api-key": "wrong"}, 401), ({"Authorization": f"Bearer {KEY}"}, 200),
     ({"Authorization": f"Bearer {ENTRA}"}, 200), ({"Authorization": "Bearer a.b.c"}, 401)],
)
def test_api_key_or_bearer(srv: ServerThread, headers: dict[str, str], status: int) -> None:
    assert call(srv.url, "POST", CHAT, hello(model="gpt-4o"), headers).status == status


def test_a_queued_429_hits_the_named_model_with_retry_headers(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault="429", retry_after=2)
    assert call(srv.url, "POST", CHAT, hello(model="gpt-4o-mini"), AUTH).status == 200
    limited = call(srv.url, "POST", CHAT, hello(model="gpt-4o"), AUTH)
    assert limited.status == 429
    assert limited.headers["retry-after"] == "2" and limited.headers["retry-after-ms"] == "2000"
    assert limited.json()["error"]["code"] == "429"
    assert admin_requests(srv.url)[-1]["fault"] == "429"
    assert call(srv.url, "POST", CHAT, hello(model="gpt-4o"), AUTH).status == 200


def test_the_plain_openai_sdk_talks_to_the_models_endpoint(srv: ServerThread) -> None:
    client = OpenAI(base_url=srv.url + "/models", api_key=KEY, max_retries=0,
                    default_query={"api-version": FOUNDRY})
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    vectors = client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert len(vectors.data[0].embedding) > 0
    assert admin_requests(srv.url)[-1]["headers"]["authorization"] == mask_secret(f"Bearer {KEY}")
