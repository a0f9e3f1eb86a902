"""The latency model: time to first token, then a delay per generated token."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import replace
from urllib.parse import urlsplit

from azure_openai_proxy.emulator import EmulatedDeployment, create_emulator_app
from azure_openai_proxy.emulator.config import EmulatorConfig
from tests.emulator.conftest import KEY, call, chat_path, hello
from tests.support import serve


def test_ttft_and_token_delay_shape_a_stream(config: EmulatorConfig) -> None:
    slow = replace(config, ttft_ms=150, token_ms=10, deployments=(
        EmulatedDeployment("slow", "gpt-4o-2024-08-06", "chat"),
        EmulatedDeployment("fast", "gpt-4o-2024-08-06", "chat", ttft_ms=0, token_ms=0),
    ))
    with serve(lambda: create_emulator_app(slow)) as srv:
        parts = urlsplit(srv.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        started = time.monotonic()
        conn.request("POST", chat_path("slow"), json.dumps(hello(stream=True)),
                     {"api-key": KEY, "Content-Type": "application/json"})
        response = conn.getresponse()
        first = response.read1(65536)
        first_at = time.monotonic() - started
        rest = response.read()
        total = time.monotonic() - started
        conn.close()
        assert first.startswith(b"data: ")
        assert 0.15 <= first_at < 0.15 + 0.16  # before the 16 tokens' delays add up
        assert total >= 0.15 + 16 * 0.01 and rest.endswith(b"data: [DONE]\n\n")

        started = time.monotonic()
        assert call(srv.url, "POST", chat_path("slow"), hello(), {"api-key": KEY}).status == 200
        assert time.monotonic() - started >= 0.15 + 16 * 0.01
        started = time.monotonic()
        assert call(srv.url, "POST", chat_path("fast"), hello(), {"api-key": KEY}).status == 200
        assert time.monotonic() - started < 0.15  # the deployment's own zero wins
