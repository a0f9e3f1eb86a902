"""Findings of an adversarial run against the default configuration, each reproduced on
loopback through the real gateway and the emulator: deep nesting, HEAD, compressed
request bodies, and a key never written to a log or an error body."""

from __future__ import annotations

import gzip
import json
import socket
import zlib

from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_gateway_edges import AUTH, call, error_of, still_serving
from tests.support import ServerThread


def nested(depth: int) -> object:
    value: object = "deep"
    for _ in range(depth):
        value = [value]
    return value


async def test_a_streamed_request_nested_too_deep_to_reencode_is_a_400(
    gateway: ServerThread, emulator: Emulator,
) -> None:
    # The gateway adds stream_options to a streamed chat, so it re-encodes the body:
    # orjson reads 1,024 levels but writes 254. Between the two: the client's 400.
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "hi"}], "metadata": {"x": nested(300)}}
    before = len(emulator.requests())
    status, _, reply = await call(gateway.url + "/v1/chat/completions",
                                  body=json.dumps(body).encode(), headers=AUTH)
    assert status == 400 and "nested too deeply" in error_of(reply)["message"]
    assert len(emulator.requests()) == before  # Azure never saw it
    still_serving(gateway)


async def test_head_is_get_without_the_body(gateway: ServerThread) -> None:
    status, headers, body = await call(gateway.url + "/v1/models", "HEAD", headers=AUTH)
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    status, _, _ = await call(gateway.url + "/health", "HEAD")
    assert status == 200


async def test_compressed_request_bodies_are_decoded_or_refused(
    gateway: ServerThread, emulator: Emulator,
) -> None:
    chat = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "zipped"}]})
    for coding, data in (("gzip", gzip.compress(chat.encode())),
                         ("deflate", zlib.compress(chat.encode()))):
        status, _, reply = await call(
            gateway.url + "/v1/chat/completions", body=data,
            headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": coding})
        assert status == 200, reply
        assert emulator.last()["json"]["messages"][0]["content"] == "zipped"
    status, _, reply = await call(
        gateway.url + "/v1/chat/completions", body=chat.encode(),
        headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "br"})
    assert status == 415 and error_of(reply)["code"] == "unsupported_content_encoding"


def test_a_malformed_request_never_echoes_or_logs_the_key(
    gateway: ServerThread, caplog: object,
) -> None:
    # aiohttp's server engine (removed) wrote this head, key and all, to its log and its
    # 400 body. A bare LF in a header line is malformed for llhttp too.
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}"
            "\r\nX-Bad\x01Header: y\r\nContent-Length: 2\r\n\r\n{}").encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(head)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert CLIENT_KEY.encode() not in reply
    assert CLIENT_KEY not in getattr(caplog, "text", "")
