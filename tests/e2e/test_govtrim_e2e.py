"""A virtual key's usual chat through the real server (`FastServer`: the key's limits on a
stream's head from `FastRequest.head_lines`) to the emulator: its streamed and whole
answers carry the key's limits, one value each, never the emulator's (Azure's), which a
static client key still gets."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.test_virtual_keys import Governed, governed

__all__ = ["governed"]  # the fixture, used by name


def _post(governed: Governed, secret: str, body: bytes) -> httpx.Response:
    return httpx.post(governed.server.url + "/v1/chat/completions", content=body, timeout=30,
                      headers={"Authorization": f"Bearer {secret}",
                               "Content-Type": "application/json"})


def _limits(headers: httpx.Headers) -> dict[str, list[str]]:
    return {name: headers.get_list(name) for name in headers if name.startswith("x-ratelimit-")}


def test_a_keys_answers_carry_its_limits_and_a_static_keys_azures(governed: Governed) -> None:
    _, secret = governed.key("limited", limits=Limits(rpm=50, tpm=100_000))
    chat: dict[str, Any] = {"model": "gpt-4o", "max_tokens": 5,
                            "messages": [{"role": "user", "content": "hello"}]}
    for stream in (False, True, False, True):  # the first decides the key; then usual
        answer = _post(governed, secret, orjson.dumps({**chat, "stream": stream}))
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(
            "text/event-stream" if stream else "application/json")
        limits = _limits(answer.headers)
        assert limits["x-ratelimit-limit-requests"] == ["50"]
        assert limits["x-ratelimit-limit-tokens"] == ["100000"]
        assert sorted(limits) == sorted(
            f"x-ratelimit-{kind}-{what}" for kind in ("limit", "remaining", "reset")
            for what in ("requests", "tokens"))
        assert all(len(values) == 1 for values in limits.values())
    static = _post(governed, CLIENT_KEY, orjson.dumps(chat))
    assert static.status_code == 200
    assert _limits(static.headers)["x-ratelimit-limit-requests"] != ["50"]  # Azure's
