"""A tiny TPM quota really refills: blocked, then accepted after `retry-after`."""

from __future__ import annotations

import math
import time

from azure_openai_proxy.emulator import EmulatedDeployment, create_emulator_app
from azure_openai_proxy.emulator.config import EmulatorConfig
from tests.emulator.conftest import KEY, call, chat_path
from tests.support import serve

AUTH = {"api-key": KEY}


def test_tpm_window_refills_after_retry_after(config: EmulatorConfig) -> None:
    from dataclasses import replace

    # Each request costs ceil(8 chars / 4) + max_tokens 58 = 60 tokens against a 100 TPM quota.
    tiny = replace(config, deployments=(
        EmulatedDeployment("tiny", "gpt-4o-2024-08-06", "chat", tpm=100, rpm=600),))
    body = {"messages": [{"role": "user", "content": "12345678"}], "max_tokens": 58}
    with serve(lambda: create_emulator_app(tiny)) as srv:
        first = call(srv.url, "POST", chat_path("tiny"), body, AUTH)
        assert first.status == 200 and first.headers["x-ratelimit-remaining-tokens"] == "40"
        blocked = call(srv.url, "POST", chat_path("tiny"), body, AUTH)
        assert blocked.status == 429
        assert blocked.headers["x-ratelimit-remaining-tokens"] == "40"
        wait_ms = int(blocked.headers["retry-after-ms"])
        assert 58_000 <= wait_ms <= 60_000  # the first request leaves the window after 60 s
        assert "token rate limit" in blocked.json()["error"]["message"]


def test_rpm_window_blocks_and_refills_for_real(config: EmulatorConfig) -> None:
    from dataclasses import replace

    # rpm 6 = 1 request per 10-second window.
    tight = replace(config, deployments=(
        EmulatedDeployment("tight", "gpt-4o-2024-08-06", "chat", tpm=1000, rpm=6),))
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with serve(lambda: create_emulator_app(tight)) as srv:
        assert call(srv.url, "POST", chat_path("tight"), body, AUTH).status == 200
        blocked = call(srv.url, "POST", chat_path("tight"), body, AUTH)
        assert blocked.status == 429
        assert 9_000 <= int(blocked.headers["retry-after-ms"]) <= 10_000
        assert blocked.headers["retry-after"] == "10"
        assert "exceeded call rate limit" in blocked.json()["error"]["message"]


def test_blocked_then_accepted_after_retry_after(config: EmulatorConfig) -> None:
    from dataclasses import replace

    from openai import AzureOpenAI

    # A 1.5-second window (the RPM one is a sixth of it), so the real wait is about 1.5 s.
    tiny = replace(config, rate_window_seconds=1.5, deployments=(
        EmulatedDeployment("tiny", "gpt-4o-2024-08-06", "chat", tpm=100, rpm=600),))
    body = {"messages": [{"role": "user", "content": "12345678"}], "max_tokens": 58}
    with serve(lambda: create_emulator_app(tiny)) as srv:
        assert call(srv.url, "POST", chat_path("tiny"), body, AUTH).status == 200
        blocked = call(srv.url, "POST", chat_path("tiny"), body, AUTH)
        assert blocked.status == 429
        wait = int(blocked.headers["retry-after-ms"]) / 1000
        # Within the window (how far into it depends on this machine's speed); the header
        # in seconds is the same wait rounded up.
        assert 0 < wait <= 1.5
        assert blocked.headers["retry-after"] == str(max(1, math.ceil(wait)))
        time.sleep(wait / 2)
        assert call(srv.url, "POST", chat_path("tiny"), body, AUTH).status == 429
        time.sleep(wait / 2 + 0.05)
        assert call(srv.url, "POST", chat_path("tiny"), body, AUTH).status == 200
        # The official SDK honours retry-after-ms and gets through on its retry.
        client = AzureOpenAI(azure_endpoint=srv.url, api_key=KEY, api_version="2024-10-21",
                             max_retries=1)
        started = time.monotonic()
        resp = client.chat.completions.with_raw_response.create(
            model="tiny", messages=body["messages"], max_tokens=58)  # type: ignore[arg-type]
        assert resp.parse().choices[0].message.content
        assert resp.retries_taken == 1 and time.monotonic() - started >= 1.0
