"""The gateway with `upstream.http2` on, in front of nginx speaking h2c and proxying to
the emulator, driven by the `openai` SDK: the same answers as over HTTP/1.1 (a stream
byte for byte), errors relayed, an abandoned stream reset without losing the
connection, many streams on one connection, and more connections past nginx's
`http2_max_concurrent_streams`."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.upstream.h2 import H2Transport
from tests.e2e.conftest import CLIENT_KEY, Emulator, emulator_config, gateway_settings
from tests.e2e.h2nginx import have_nginx, nginx_h2c
from tests.support import ServerThread, serve

pytestmark = pytest.mark.skipif(not have_nginx(), reason="nginx (with http_v2) not installed")


def _gateway(upstream_url: str, http2: bool) -> ServerThread:
    # A short retry budget: a 429 with a long retry-after is relayed, not waited out.
    settings = gateway_settings(upstream_url, upstream={"http2": http2}, retry_budget_seconds=2)
    return ServerThread(lambda: create_app(settings)).start()


def _client(gateway: ServerThread) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def _transport(gateway: ServerThread) -> H2Transport:
    transport = gateway.app.gateway.transport
    assert isinstance(transport, H2Transport)
    return transport


@pytest.fixture
def paired(emulator: Emulator, tmp_path: Path, reserve_port: Callable[[], int]
           ) -> Iterator[tuple[ServerThread, ServerThread]]:
    """(a gateway over HTTP/2 through nginx, one over HTTP/1.1 straight to the emulator)"""
    with nginx_h2c(tmp_path, reserve_port(), emulator.url) as url:
        over_h2, over_h1 = _gateway(url, True), _gateway(emulator.url, False)
        yield over_h2, over_h1
        over_h2.stop()
        over_h1.stop()


@pytest.fixture
def slow_upstream(tmp_path: Path, reserve_port: Callable[[], int]) -> Iterator[
        Callable[[int], str]]:
    """nginx (h2c, a given stream limit) before an emulator streaming a token per 20 ms."""
    with serve(lambda: create_emulator_app(emulator_config(token_ms=20))) as emulator:
        def start(max_streams: int) -> str:
            return stack.enter_context(
                nginx_h2c(tmp_path, reserve_port(), emulator.url, max_streams=max_streams))
        from contextlib import ExitStack
        with ExitStack() as stack:
            yield start


def _chat(client: Any, model: str = "gpt-4o") -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say something"}], max_tokens=20)


def test_a_chat_gets_the_same_answer(paired: tuple[ServerThread, ServerThread]) -> None:
    over_h2, over_h1 = (_chat(_client(gateway)) for gateway in paired)
    assert over_h2.choices[0].message.content == over_h1.choices[0].message.content
    assert over_h2.usage == over_h1.usage and over_h2.model == "gpt-4o"
    assert _transport(paired[0]).connections_in_use() == 0


_VARYING = re.compile(rb'"(id|created|system_fingerprint)":("[^"]*"|\d+)')


def _raw_stream(gateway: ServerThread) -> bytes:
    body = {"model": "gpt-4o", "stream": True, "max_tokens": 30,
            "messages": [{"role": "user", "content": "Stream please"}],
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {CLIENT_KEY}"}) as response:
        assert response.status_code == 200
        return b"".join(response.iter_bytes())


def test_a_stream_is_relayed_byte_for_byte(paired: tuple[ServerThread, ServerThread]) -> None:
    over_h2, over_h1 = (_raw_stream(gateway) for gateway in paired)
    assert over_h2.endswith(b"data: [DONE]\n\n") and over_h2.count(b"data: ") > 5
    # Each request's own id and clock aside (the emulator's), the bytes are the same.
    assert _VARYING.sub(b"", over_h2) == _VARYING.sub(b"", over_h1)


def test_an_upstream_error_is_relayed(paired: tuple[ServerThread, ServerThread],
                                      emulator: Emulator) -> None:
    from openai import RateLimitError

    errors = []
    for gateway in paired:
        emulator.fault("gpt-4o", "429", retry_after=7)
        with pytest.raises(RateLimitError) as caught:
            _chat(_client(gateway))
        errors.append((caught.value.status_code, caught.value.body))
    assert errors[0] == errors[1]
    # The connection serves on (another deployment: gpt-4o's cools down for 7 s).
    assert _chat(_client(paired[0]), "gpt-4o-mini").choices[0].message.content


def test_an_abandoned_stream_is_reset_and_the_connection_serves_on(
        slow_upstream: Callable[[int], str]) -> None:
    gateway = _gateway(slow_upstream(128), True)
    try:
        client = _client(gateway)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "A long story"}],
            max_tokens=500, stream=True)  # ~10 s at 20 ms a token
        next(iter(stream))
        stream.close()  # the client hangs up mid-stream
        transport = _transport(gateway)
        deadline = time.monotonic() + 5
        while transport.connections_in_use() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert transport.connections_in_use() == 0  # reset, not read to its end
        pools = list(transport._pools.values())
        assert len(pools) == 1 and len(pools[0].conns) == 1
        first = pools[0].conns[0]
        assert _chat(client).choices[0].message.content
        assert pools[0].conns == [first]  # the same connection
    finally:
        gateway.stop()


def _streams(gateway: ServerThread, count: int, prompt: str = "Hi", max_tokens: int = 15
             ) -> list[str]:
    """`count` streams at once: the threads start their requests together (a barrier:
    a thread pool's threads come up one by one, and on a loaded machine the first
    streams could end before the last began)."""
    client = _client(gateway)
    start = threading.Barrier(count)

    def one(_: int) -> str:
        start.wait(30)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize(("max_streams", "connections"), [(128, 1), (4, 6)])
def test_concurrent_streams_share_connections_up_to_the_servers_limit(
        slow_upstream: Callable[[int], str], max_streams: int, connections: int) -> None:
    gateway = _gateway(slow_upstream(max_streams), True)
    try:
        # The connections opened follow how many streams were in flight at once: ~1 s a
        # stream (60 tokens at 20 ms), so the 24 overlap on a loaded machine ("Hi", 15
        # tokens: ~0.3 s, and at load ~20 main and h2sink alike saw 16-20 streams at
        # once and 4-5 connections, session 30's review).
        texts = _streams(gateway, 24, "A long story", max_tokens=60)
        assert len(texts) == 24 and all(texts) and len(set(texts)) == 1
        conns = [conn for pool in _transport(gateway)._pools.values() for conn in pool.conns]
        assert {conn.max_streams for conn in conns} == {max_streams}
        if max_streams == 128:
            assert len(conns) == 1
        else:  # 24 streams at once, 4 a connection
            assert connections <= len(conns) <= 24 // 4 + 2
    finally:
        gateway.stop()


def test_an_upload_and_an_embedding_go_over_http2(
        paired: tuple[ServerThread, ServerThread], emulator: Emulator) -> None:
    from tests.e2e.scenarios import spoken_then_transcribed

    client = _client(paired[0])
    wav, entry = spoken_then_transcribed(client, emulator)  # a multipart body, streamed
    assert entry["body_size"] > len(wav)
    vector = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(vector.data[0].embedding) > 10
    assert _transport(paired[0]).connections_in_use() == 0
