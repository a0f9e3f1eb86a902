"""`upstream.http2: auto`, the default, end to end: the gateway with default upstream
settings in front of nginx over TLS (trusted through `SSL_CERT_FILE`, as a deployment
trusts a private CA) and the emulator behind it, driven by the `openai` SDK. Where ALPN
offers h2 the chat and the stream go over HTTP/2; where it offers only http/1.1 they go
over HTTP/1.1 and work the same; the Realtime API's WebSocket goes over HTTP/1.1 either
way (it needs the upgrade, and never uses the `Transport`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from azure_openai_proxy.upstream.auto import AutoTransport
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.h2nginx import have_nginx
from tests.e2e.test_realtime import DATED, realtime_entries, realtime_settings, text_turn
from tests.e2e.tlsnginx import TlsUpstream, nginx_tls
from tests.support import ServerThread
from tests.waiting import until

pytestmark = pytest.mark.skipif(not have_nginx(), reason="nginx (with ssl and http_v2) not installed")


@pytest.fixture(params=[True, False], ids=["h2-offered", "http1-only"])
def tls_upstream(request: pytest.FixtureRequest, emulator: Emulator, tmp_path: Path,
                 reserve_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[TlsUpstream]:
    with nginx_tls(tmp_path, reserve_port(), emulator.url, http2=request.param) as upstream:
        # What ssl.create_default_context() loads: the gateway's own, untouched.
        monkeypatch.setenv("SSL_CERT_FILE", str(upstream.cert))
        yield upstream


@pytest.fixture
def gateway(tls_upstream: TlsUpstream, start_gateway: Callable[[Any], ServerThread]) -> ServerThread:
    settings = realtime_settings(tls_upstream.url)
    assert settings.upstream.http2 == "auto"  # nothing about HTTP/2 configured
    return start_gateway(settings)


def _client(gateway: ServerThread) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def test_a_chat_and_a_stream_over_what_alpn_chose(
    request: pytest.FixtureRequest, tls_upstream: TlsUpstream, gateway: ServerThread,
) -> None:
    client = _client(gateway)
    chat = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say something"}], max_tokens=20)
    assert chat.choices[0].message.content and chat.model == "gpt-4o"
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say something"}], max_tokens=20,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    offered = request.node.callspec.params["tls_upstream"]
    until(lambda: len(tls_upstream.protocols()) == 2)
    assert tls_upstream.protocols() == ["HTTP/2.0" if offered else "HTTP/1.1"] * 2
    transport = gateway.app.gateway.transport
    assert isinstance(transport, AutoTransport)
    until(lambda: transport.connections_in_use() == 0)  # the stream's tail drains behind it


def test_the_realtime_websocket_goes_over_http1(
    request: pytest.FixtureRequest, emulator: Emulator, tls_upstream: TlsUpstream,
    gateway: ServerThread,
) -> None:
    client = _client(gateway)
    with client.realtime.connect(model=DATED) as connection:
        connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        text, _ = text_turn(connection)
    assert text
    until(lambda: "closed_at" in realtime_entries(emulator)[0])
    assert realtime_entries(emulator)[0]["status"] == 101
    until(lambda: len(tls_upstream.protocols()) == 1)
    assert tls_upstream.protocols() == ["HTTP/1.1"]
