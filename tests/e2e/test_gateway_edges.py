"""Bad input, auth, health, CORS, upstream failures: a clear OpenAI-shaped error every
time, and the gateway keeps serving."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, MASKED_AZURE_KEY, Emulator, gateway_settings
from tests.support import ServerThread

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


async def call(url: str, method: str = "POST", body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.request(
        method, url, data=body, headers=headers or {}
    ) as response:
        return response.status, dict(response.headers), await response.read()


def error_of(body: bytes) -> dict[str, Any]:
    error = json.loads(body)["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    return dict(error)


def still_serving(gateway: ServerThread) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    assert client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "still there?"}]
    ).choices[0].message.content


CHAT = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, None),
        (b"[1, 2]", {}, 400, None),
        (b'{"messages": []}', {}, 400, None),
        (b'{"model": 42, "messages": []}', {}, 400, None),
        (b'{"model": "no-such-model", "messages": []}', {}, 404, "model_not_found"),
        (b'{"model": "../../etc/passwd", "messages": []}', {}, 400, "invalid_value"),
        (b'{"model": "gpt-4o?x=1#y", "messages": []}', {}, 400, "invalid_value"),
        (b'{"model": "gpt\\r\\nHost: evil", "messages": []}', {}, 400, "invalid_value"),
        (CHAT, {"Authorization": "Bearer wrong"}, 401, "invalid_api_key"),
        (CHAT, {"Authorization": ""}, 401, "invalid_api_key"),
    ],
)
async def test_bad_requests_get_openai_errors(
    gateway: ServerThread, emulator: Emulator, body: bytes, headers: dict[str, str],
    status: int, code: str | None,
) -> None:
    before = len(emulator.requests())
    got, _, reply = await call(gateway.url + "/v1/chat/completions", body=body,
                               headers={**AUTH, "Content-Type": "application/json", **headers})
    assert got == status
    error = error_of(reply)
    if code is not None:
        assert error["code"] == code
    assert len(emulator.requests()) == before  # nothing reached Azure
    assert AZURE_KEY not in reply.decode()
    still_serving(gateway)


async def test_unknown_route_and_wrong_method(gateway: ServerThread) -> None:
    status, _, body = await call(gateway.url + "/v1/nope", headers=AUTH)
    assert status == 404 and error_of(body)["code"] == "unknown_url"
    status, _, body = await call(gateway.url + "/v1/chat/completions", method="DELETE",
                                 headers=AUTH)  # (GET lists stored chat completions)
    assert status == 405
    error_of(body)


async def test_oversize_body_is_413(emulator: Emulator,
                                    start_gateway: Callable[[Settings], ServerThread]) -> None:
    gateway = start_gateway(gateway_settings(emulator.url, max_body_bytes=1000))
    big = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=big,
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert status == 413
    error_of(body)
    # Chunked (no Content-Length) is limited too.
    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 500

    async with aiohttp.ClientSession() as session, session.post(
        gateway.url + "/v1/chat/completions", data=chunks(), headers=AUTH
    ) as response:
        assert response.status == 413


async def test_health_and_head_root_never_call_azure(gateway: ServerThread, emulator: Emulator) -> None:
    assert (await call(gateway.url + "/health", method="GET"))[0] == 200
    assert (await call(gateway.url + "/", method="HEAD"))[0] == 200
    assert emulator.requests() == []


async def test_upstream_down_is_502(
    start_gateway: Callable[[Settings], ServerThread], reserve_port: Callable[[], int]
) -> None:
    dead = f"http://127.0.0.1:{reserve_port()}"  # held bound, never listening: refused
    gateway = start_gateway(gateway_settings(dead))
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert status == 502
    error = error_of(body)
    assert "Cannot reach Azure OpenAI" in error["message"]


async def test_upstream_errors_pass_through_in_openai_shape(gateway: ServerThread, emulator: Emulator) -> None:
    emulator.fault("gpt-4o", "503")
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert status == 503
    assert error_of(body)["type"] == "server_error"


async def test_upstream_reset_mid_stream_ends_with_error_event(gateway: ServerThread, emulator: Emulator) -> None:
    from openai import APIError, OpenAI

    emulator.fault("gpt-4o", "cut", after_frames=3)
    client = OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a long answer please"}], stream=True,
        max_tokens=50,
    )
    received = []
    with pytest.raises(APIError):
        for chunk in stream:
            received.append(chunk)
    still_serving(gateway)


async def test_cors(emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> None:
    gateway = start_gateway(gateway_settings(emulator.url, cors=True))
    status, headers, _ = await call(gateway.url + "/v1/chat/completions", method="OPTIONS", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    })
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "authorization" in headers["Access-Control-Allow-Headers"].lower()
    status, headers, _ = await call(gateway.url + "/v1/models", method="GET",
                                    headers={**AUTH, "Origin": "http://app.example"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    # A relayed answer too (on FastServer it is written without an aiohttp Response).
    status, headers, body = await call(gateway.url + "/v1/chat/completions", body=CHAT, headers={
        **AUTH, "Origin": "http://app.example", "Content-Type": "application/json"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"].startswith("application/json")
    assert int(headers["Content-Length"]) == len(body) and json.loads(body)["model"] == "gpt-4o"
    # Without --cors there is no CORS header.
    plain = start_gateway(gateway_settings(emulator.url))
    _, headers, _ = await call(plain.url + "/v1/models", method="GET",
                               headers={**AUTH, "Origin": "http://app.example"})
    assert "Access-Control-Allow-Origin" not in headers


async def test_passthrough_mode_uses_the_clients_key(emulator: Emulator,
                                                     start_gateway: Callable[[Settings], ServerThread]) -> None:
    from azure_openai_proxy.config import load_settings

    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url,
                                    "AZURE_OPENAI_MODEL_MAPPER": "gpt-3.5-turbo=gpt-35-turbo"})
    gateway = start_gateway(settings)
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=json.dumps(
        {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Authorization": f"Bearer {AZURE_KEY}", "Content-Type": "application/json"})
    assert status == 200, body
    entry = emulator.last()
    assert entry["headers"]["api-key"] == MASKED_AZURE_KEY
    assert "authorization" not in {k.lower() for k in entry["headers"]}
    assert entry["query"].count("api-version") == 1
    # A wrong client key is Azure's 401, in OpenAI's shape, naming no key.
    status, _, body = await call(gateway.url + "/v1/chat/completions", body=CHAT,
                                 headers={"Authorization": "Bearer not-the-key", "Content-Type": "application/json"})
    assert status == 401
    assert "not-the-key" not in body.decode()
    error_of(body)


async def test_azure_openai_client_through_gateway(gateway: ServerThread, emulator: Emulator) -> None:
    from openai import AzureOpenAI

    client = AzureOpenAI(azure_endpoint=gateway.url, api_key=CLIENT_KEY, api_version="2024-10-21",
                         max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    entry = emulator.last()
    assert entry["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert entry["query_params"]["api-version"] == ["2024-10-21"]  # the client's, honoured


def test_raw_socket_garbage_does_not_hurt(gateway: ServerThread) -> None:
    for garbage in (b"GARBAGE\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(garbage)
            sock.recv(4096)
    still_serving(gateway)
