"""Each fault kind, queued over the admin endpoint, hits exactly the requests it should."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest
from openai import APIConnectionError, AzureOpenAI

from tests.emulator.conftest import GA, KEY, add_fault, admin_requests, call, chat_path, hello
from tests.support import ServerThread

AUTH = {"api-key": KEY}


def test_429_fault_with_retry_headers_then_normal(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault="429", retry_after=0.5)
    other = call(srv.url, "POST", chat_path("gpt-4o-mini"), hello(), AUTH)
    assert other.status == 200  # another deployment is untouched
    limited = call(srv.url, "POST", chat_path(), hello(), AUTH)
    assert limited.status == 429
    assert limited.headers["retry-after"] == "1" and limited.headers["retry-after-ms"] == "500"
    assert limited.json()["error"]["code"] == "429"
    assert "ChatCompletions_Create" in limited.json()["error"]["message"]
    assert call(srv.url, "POST", chat_path(), hello(), AUTH).status == 200


@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_faults_count_down(srv: ServerThread, kind: str) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault=kind, count=2)
    statuses = [call(srv.url, "POST", chat_path(), hello(), AUTH).status for _ in range(3)]
    assert statuses == [int(kind), int(kind), 200]
    body = call(srv.url, "GET", "/_emulator/requests").json()["data"][0]
    assert body["fault"] == kind


def test_error_bodies_of_500_and_503(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="*", fault="500")
    add_fault(srv.url, deployment="*", fault="503")
    error = call(srv.url, "POST", chat_path(), hello(), AUTH).json()["error"]
    assert error["type"] == "server_error" and "request ID" in error["message"]
    unavailable = call(srv.url, "POST", chat_path(), hello(), AUTH).json()["error"]
    assert unavailable["code"] == "ServiceUnavailable"


def test_fault_matched_by_body_model_on_v1(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault="503")
    reply = call(srv.url, "POST", "/openai/v1/chat/completions", hello(model="gpt-4o"), AUTH)
    assert reply.status == 503


def test_hang_delays_then_answers(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault="hang", seconds=0.4)
    started = time.monotonic()
    reply = call(srv.url, "POST", chat_path(), hello(), AUTH)
    assert reply.status == 200 and time.monotonic() - started >= 0.4


def test_drop_closes_before_any_header(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault="drop")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        call(srv.url, "POST", chat_path(), hello(), AUTH)
    add_fault(srv.url, deployment="gpt-4o", fault="drop")
    client = AzureOpenAI(azure_endpoint=srv.url, api_key=KEY, api_version=GA, max_retries=0)
    with pytest.raises(APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    entry = admin_requests(srv.url)[0]
    assert entry["fault"] == "drop" and entry["status"] is None


def _stream_until_closed(url: str, path: str, body: dict[str, object]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    conn.request("POST", path, body=json.dumps(body), headers={**AUTH,
                 "Content-Type": "application/json"})
    response = conn.getresponse()
    received = b""
    try:
        while chunk := response.read1(65536):
            received += chunk
    except http.client.IncompleteRead as exc:
        received += exc.partial
        return response.status, received
    finally:
        conn.close()
    raise AssertionError("the stream ended cleanly")


def test_cut_closes_a_stream_after_k_frames_without_done(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault="cut", after_frames=3)
    status, received = _stream_until_closed(srv.url, chat_path(), hello(stream=True))
    assert status == 200
    assert received.count(b"data: ") == 3 and b"[DONE]" not in received
    assert admin_requests(srv.url)[0]["status"] == 200


def test_cut_on_a_non_streamed_request_drops(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-4o", fault="cut")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        call(srv.url, "POST", chat_path(), hello(), AUTH)


def test_admin_lists_clears_and_validates_faults(srv: ServerThread) -> None:
    fault_id = add_fault(srv.url, deployment="*", fault="hang", count=3, seconds=1)
    pending = call(srv.url, "GET", "/_emulator/faults").json()["data"]
    assert pending == [{"id": fault_id, "deployment": "*", "kind": "hang", "count": 3,
                        "seconds": 1.0, "after_frames": 2, "retry_after": 1.0}]
    assert call(srv.url, "DELETE", "/_emulator/faults").status == 200
    assert call(srv.url, "GET", "/_emulator/faults").json()["data"] == []
    bad = call(srv.url, "POST", "/_emulator/faults", {"deployment": "x", "fault": "418"})
    assert bad.status == 400 and "fault" in bad.json()["error"]
