"""A request that never left the gateway is not charged as if Azure had it (issue 13,
session 18): a client that leaves while its request waits for an upstream connection
(the pool at `upstream.pool_size`, or the connect or TLS handshake still running) was
recorded with an estimate (flagged) as if Azure might bill it, and its key's budget and
TPM were charged with it. Only a request whose bytes were handed to a socket is
estimated now; one that was, and whose client left, still is (the existing rule)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from azure_openai_proxy.config import load_settings
from tests.e2e.conftest import Emulator, emulator_config, gateway_settings
from tests.e2e.pools import chat_deployment, pool_config, pool_emulator
from tests.e2e.test_ledger import (  # noqa: F401  (fixtures)
    _app,
    _start,
    _virtual_key,
    ledger_gateway,
    records,
)
from tests.support import ServerThread, serve
from tests.waiting import until


@pytest.fixture
def slow_first_byte() -> Iterator[Emulator]:
    """Azure's first byte 8 s after the request: the request ahead holds the pool's one
    connection for as long as the test needs (it leaves before then)."""
    from azure_openai_proxy.emulator import create_emulator_app

    with serve(lambda: create_emulator_app(emulator_config(ttft_ms=8000))) as server:
        yield Emulator(server)


def _post(gateway: ServerThread, secret: str, body: dict[str, Any]) -> socket.socket:
    """A chat request on a raw connection, left open; closing it is the client leaving."""
    host, port = gateway.url.split("//")[1].split(":")
    data = json.dumps(body).encode()
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 + secret.encode() + b"\r\nContent-Type: application/json\r\n"
                 + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return conn


def _chat(max_tokens: int) -> dict[str, Any]:
    return {"model": "gpt-4o", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "word " * 200}]}


def _remaining_tokens(gateway: ServerThread, secret: str) -> int:
    """The key's TPM left, as the model list's answer tells it (no upstream call)."""
    answer = httpx.get(gateway.url + "/v1/models",
                       headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200, answer.text
    return int(answer.headers["x-ratelimit-remaining-tokens"])


def test_a_request_left_while_queued_for_the_pool_is_not_charged(
    slow_first_byte: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = ledger_gateway(slow_first_byte, upstream={"pool_size": 1, "pool_timeout": 60})
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "queued", budget_usd=50.0,
                                  budget_period="daily", tpm=100_000)
    guard = _app(gateway).gateway.budgets
    assert guard is not None
    owner = ("key", key_id)
    ahead = _post(gateway, secret, _chat(100))  # sent: it holds the one connection
    until(lambda: len(slow_first_byte.requests()) == 1, 10, "Azure never got the request")
    held = guard.held(owner)
    # Its hold taken, the next request is waiting for the connection (no await between
    # the hold and the pool's queue: the gateway's loop sees the client leave after).
    queued = _post(gateway, secret, _chat(90_000))
    until(lambda: guard.held(owner) > held, 10, "the second request was never held")
    queued.close()

    def left() -> list[Any]:
        return [r for r in records(gateway) if r.key_id == key_id and r.status == 499]

    until(left, 10, "the queued request was not recorded")
    [never_sent] = left()
    assert len(slow_first_byte.requests()) == 1  # it never reached Azure
    assert never_sent.usage_source == "none", never_sent
    assert (never_sent.prompt_tokens, never_sent.completion_tokens) == (0, 0), never_sent
    assert never_sent.cost_usd == 0, never_sent

    ahead.close()  # sent and left: Azure may bill it, so it is estimated (as before)
    until(lambda: len(left()) == 2, 10, "the request sent was not recorded")
    [sent] = [r for r in left() if r.request_id != never_sent.request_id]
    assert sent.usage_source == "estimated" and sent.prompt_tokens > 0, sent
    assert sent.cost_usd > 0, sent
    # The budget is charged with the request sent alone; the queued one's 90,000 tokens
    # are back in the key's TPM (charged, about 10,000 would be left).
    assert guard.spent(owner, "daily") == pytest.approx(sent.cost_usd, rel=1e-9)
    assert _remaining_tokens(gateway, secret) > 50_000


class SilentUpstream:
    """A loopback listener that accepts connections and reads what comes, never
    answering: a TLS client's handshake never completes, an HTTP request never gets a
    head. Counts the connections and the bytes that arrived."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)

    def close(self) -> None:
        self.listener.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentUpstream]:
    upstream = SilentUpstream()
    try:
        yield upstream
    finally:
        upstream.close()


@pytest.mark.parametrize(("scheme", "http2", "sent"), [
    ("https", "auto", False),  # HTTP/2's connection (ALPN), its TLS handshake unanswered
    ("https", "false", False),  # HTTP/1.1's
    ("http", "false", True),  # the request written, no answer: estimated, as before
], ids=["h2-tls-handshake", "http1-tls-handshake", "http1-sent"])
def test_a_request_left_while_connecting_is_not_charged(
    silent: SilentUpstream, tmp_path: Path, scheme: str, http2: str, sent: bool,
) -> None:
    settings = gateway_settings(f"{scheme}://127.0.0.1:{silent.port}",
                                database=f"sqlite:///{tmp_path / 'gw.db'}",
                                upstream={"http2": http2, "connect_timeout": 60,
                                          "read_timeout": 60})
    gateway = _start(settings)
    try:
        # The usual key (a TPM, no budget): the request path's short way.
        key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "connecting",
                                      tpm=100_000)
        client = _post(gateway, secret, _chat(90_000))
        if sent:
            until(lambda: silent.received > 0, 10, "the request was never written")
        else:
            until(lambda: silent.accepted > 0, 10, "the gateway never connected")
        client.close()

        def left() -> list[Any]:
            return [r for r in records(gateway) if r.key_id == key_id and r.status == 499]

        until(left, 10, "the request left was not recorded")
        [record] = left()
        remaining = _remaining_tokens(gateway, secret)
        if sent:
            assert record.usage_source == "estimated", record
            assert record.completion_tokens == 90_000, record  # what Azure may bill
            assert remaining < 50_000
        else:
            assert record.usage_source == "none", record
            assert (record.prompt_tokens, record.completion_tokens) == (0, 0), record
            assert remaining > 50_000  # its reservation given back
    finally:
        gateway.stop()


@pytest.mark.parametrize("second", ["sent", "connecting"])
def test_a_retry_left_is_judged_by_its_own_attempt(
    silent: SilentUpstream, tmp_path: Path, second: str,
) -> None:
    """The first deployment answers 503 (not billed); the request goes on to the second
    and its client leaves. Sent there (Azure finishes and bills a non-streamed call): an
    estimate, where the first attempt's answer had it recorded at $0. Still connecting
    there (a TLS handshake never answered): nothing, though the first attempt was sent."""
    slow = chat_deployment("dep-b", ttft_ms=8000)
    with pool_emulator(chat_deployment("dep-a"), slow) as emulator:
        second_endpoint = (emulator.url if second == "sent"
                           else f"https://127.0.0.1:{silent.port}")
        config = pool_config(emulator.url, [("dep-a", {"priority": 1}),
                                            ("dep-b", {"priority": 2,
                                                       "endpoint": second_endpoint})],
                             database=f"sqlite:///{tmp_path / 'gw.db'}",
                             upstream={"connect_timeout": 60})
        gateway = _start(load_settings(config, {}))
        try:
            key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "retried",
                                          budget_usd=50.0, budget_period="daily")
            emulator.fault("dep-a", "503")
            client = _post(gateway, secret, _chat(100))
            if second == "sent":
                until(lambda: len(emulator.requests()) == 2, 10, "dep-b never got it")
            else:
                until(lambda: silent.accepted > 0, 10, "the gateway never tried dep-b")
            client.close()

            def left() -> list[Any]:
                return [r for r in records(gateway) if r.key_id == key_id and r.status == 499]

            until(left, 10, "the request left was not recorded")
            [record] = left()
            assert (record.deployment, record.attempts) == ("dep-b", 2), record
            if second == "sent":
                assert record.usage_source == "estimated", record
                assert record.completion_tokens == 100 and record.cost_usd > 0, record
            else:
                assert record.usage_source == "none" and record.cost_usd == 0, record
        finally:
            gateway.stop()
