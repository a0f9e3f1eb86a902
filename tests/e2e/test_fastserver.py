"""The real gateway served by FastServer in front of the emulator, driven by the `openai`
SDK, and the emulator's request log shows what reached "Azure"."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.http.server import FastServer, serve_fast
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, Emulator, gateway_settings
from tests.e2e.scenarios import spoken_then_transcribed, streamed_chat
from tests.e2e.test_gateway_routes import assert_reached_azure
from tests.support import bound_socket


class FastServerThread:
    """`create_app(settings)` on FastServer, in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sock = bound_socket()
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.server: FastServer | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> FastServerThread:
        self._thread.start()

        async def boot() -> FastServer:
            return await serve_fast(create_app(self.settings), None, 0, sock=self.sock)

        self.server = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(30)
        return self

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(1), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def fast_gateway(emulator: Emulator) -> Iterator[FastServerThread]:
    server = FastServerThread(gateway_settings(emulator.url, metrics=True)).start()
    yield server
    server.stop()


@pytest.fixture
def fast_client(fast_gateway: FastServerThread) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=fast_gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_chat_twice_on_one_connection(fast_client: Any, emulator: Emulator) -> None:
    for text in ("Hello there", "And again"):
        reply = fast_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": text}], max_tokens=12
        )
        assert reply.choices[0].message.content and reply.model == "gpt-4o"
        entry = emulator.last()
        assert_reached_azure(entry, "/openai/deployments/gpt-4o/chat/completions")
        assert entry["json"]["messages"] == [{"role": "user", "content": text}]


def test_streamed_chat(fast_client: Any, emulator: Emulator) -> None:
    streamed_chat(fast_client)


def test_embeddings(fast_client: Any, emulator: Emulator) -> None:
    reply = fast_client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(reply.data) == 2 and reply.data[0].embedding
    assert_reached_azure(emulator.last(), "/openai/deployments/text-embedding-3-small/embeddings")


def test_multipart_transcription(fast_client: Any, emulator: Emulator) -> None:
    wav, entry = spoken_then_transcribed(fast_client, emulator)
    assert entry["body_size"] > len(wav)


def test_file_upload_and_download(fast_client: Any, emulator: Emulator) -> None:
    line = b'{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt-4o"}}\n'
    uploaded = fast_client.files.create(file=("batch.jsonl", line, "application/jsonl"), purpose="batch")
    assert_reached_azure(emulator.last(), "/openai/files")
    assert fast_client.files.content(uploaded.id).read() == line
    fast_client.files.delete(uploaded.id)


def test_models_list(fast_client: Any) -> None:
    names = [model.id for model in fast_client.models.list()]
    assert "gpt-4o" in names and "whisper-1" in names


def test_unknown_model_is_404_model_not_found(fast_client: Any, emulator: Emulator) -> None:
    from openai import NotFoundError

    before = len(emulator.requests())
    with pytest.raises(NotFoundError) as caught:
        fast_client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    assert len(emulator.requests()) == before


def test_wrong_key_is_401(fast_gateway: FastServerThread) -> None:
    from openai import AuthenticationError, OpenAI

    client = OpenAI(base_url=fast_gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(AuthenticationError):
        client.models.list()


def test_health_metrics_and_local_routes(fast_gateway: FastServerThread, fast_client: Any) -> None:
    assert _get(fast_gateway.url + "/health") == (200, b'{"status":"ok"}')
    status, body = _get(fast_gateway.url + "/health/deployments",
                        {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 200 and json.loads(body)["deployments"]
    assert _get(fast_gateway.url + "/health/deployments")[0] == 401
    status, body = _get(fast_gateway.url + "/")
    assert status == 200 and json.loads(body)["service"] == "azure-openai-proxy"
    fast_client.models.list()
    status, body = _get(fast_gateway.url + "/metrics")
    assert status == 200 and b"# TYPE" in body
    status, body = _get(fast_gateway.url + "/v1/nope", {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_url"


def test_malformed_http_then_still_serving(fast_gateway: FastServerThread, fast_client: Any) -> None:
    with socket.create_connection(("127.0.0.1", fast_gateway.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
    assert fast_client.models.list().data


def test_oversize_body_is_413(emulator: Emulator) -> None:
    server = FastServerThread(gateway_settings(emulator.url, max_body_bytes=1000)).start()
    try:
        big = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]})
        request = urllib.request.Request(
            server.url + "/v1/chat/completions", data=big.encode(), method="POST",
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 413
        assert json.loads(caught.value.read())["error"]
    finally:
        server.stop()
