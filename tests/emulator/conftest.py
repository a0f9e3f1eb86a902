"""Fixtures for the emulator's tests: a served emulator and a raw HTTP helper."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from azure_openai_proxy.emulator import create_emulator_app, load_emulator_config
from azure_openai_proxy.emulator.config import EmulatorConfig
from tests.support import ServerThread, serve

KEY = "test-key-1"
KEY2 = "test-key-2"
ENTRA = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJjb2duaXRpdmUifQ.c2lnbmF0dXJl"
GA = "2024-10-21"
PREVIEW = "2025-04-01-preview"


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One raw HTTP exchange; `body` dicts are sent as JSON."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    sent = dict(headers or {})
    data: bytes | None
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    else:
        data = body
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def chat_path(deployment: str = "gpt-4o", version: str = GA) -> str:
    return f"/openai/deployments/{deployment}/chat/completions?api-version={version}"


def hello(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Hello there"}], **extra}


def sse_data(body: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [
        line[len("data: ") :]
        for line in body.decode().split("\n")
        if line.startswith("data: ")
    ]


@pytest.fixture(scope="session")
def config() -> EmulatorConfig:
    from dataclasses import replace

    base = load_emulator_config(None, api_key=KEY)
    return replace(base, api_keys=(KEY, KEY2), entra_tokens=(ENTRA,))


@pytest.fixture(scope="session")
def server(config: EmulatorConfig) -> Iterator[ServerThread]:
    with serve(lambda: create_emulator_app(config)) as srv:
        yield srv


@pytest.fixture
def srv(server: ServerThread) -> ServerThread:
    """The shared emulator, with faults, log and rate windows reset for this test."""
    assert call(server.url, "POST", "/_emulator/reset").status == 200
    return server


def admin_requests(url: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = call(url, "GET", "/_emulator/requests").json()["data"]
    return data


def add_fault(url: str, **fault: Any) -> str:
    reply = call(url, "POST", "/_emulator/faults", fault)
    assert reply.status == 200, reply.body
    fault_id: str = reply.json()["id"]
    return fault_id
