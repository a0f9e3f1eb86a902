"""A request the HTTP engine refuses while the gateway is serving it (a malformed
chunked body): the access log records what the client got, not the 499 of a client
that left (review of issue 13)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CLIENT_KEY
from tests.support import ServerThread
from tests.waiting import until


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    logger = logging.getLogger("azure_openai_proxy.access")
    handler, level = Capture(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_malformed_chunked_body_is_logged_with_the_400_the_client_got(
        gateway: ServerThread, access_lines: list[dict[str, Any]]) -> None:
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        # 100 Continue: the gateway is serving the request and reading its body.
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"5\r\n{\"mod\r\nzz\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    until(lambda: access_lines, timeout=10, message="no access log line")
    [line] = access_lines
    assert (line["route"], line["status"]) == ("chat/completions", 400)
