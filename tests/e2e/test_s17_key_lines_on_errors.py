"""A virtual key's errors say its own limits, wherever they are made (review of the
govtrim commits): the gateway's own refusal after the key's limits let a request
through (every deployment cooling down after Azure's 429) had no `x-ratelimit-*` at all,
and a refused Realtime handshake carried Azure's (the shared deployment's quota: 6,000
requests, 1,000,000 tokens) instead of the key's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator
from tests.e2e.test_realtime import DATED, realtime_settings, virtual_key, ws_url
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)
from tests.support import ServerThread

_NAMES = sorted(f"x-ratelimit-{kind}-{what}" for kind in ("limit", "remaining", "reset")
                for what in ("requests", "tokens"))


def _key_lines(headers: httpx.Headers) -> dict[str, list[str]]:
    return {name: headers.get_list(name) for name in headers
            if name.startswith("x-ratelimit-")}


def test_the_gateways_own_refusal_after_azures_429_says_the_keys_limits(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    _, secret = governed.key("k", limits=Limits(rpm=50, tpm=1_000_000))
    chat = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    emulator.fault("gpt-4o", "429", retry_after=600, count=1)
    for number in range(2):  # Azure's 429, then the gateway's (the deployment cooling)
        answer = httpx.post(governed.server.url + "/v1/chat/completions", timeout=30,
                            headers={"Authorization": f"Bearer {secret}"}, json=chat)
        assert answer.status_code == 429, (number, answer.text)
        lines = _key_lines(answer.headers)
        assert sorted(lines) == _NAMES, (number, lines)
        assert all(len(values) == 1 for values in lines.values()), lines
        assert lines["x-ratelimit-limit-requests"] == ["50"]
        assert "retry-after" in answer.headers


def test_a_refused_realtime_handshake_says_the_keys_limits_not_azures(
    tmp_path: Path, emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    gateway = start_gateway(realtime_settings(
        emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}"))
    _, secret = virtual_key(gateway, tmp_path / "gw.db", rpm=50, tpm=100_000)
    emulator.fault(DATED, "429", retry_after=600, count=3)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(gateway, f"/v1/realtime?model={DATED}"),
                additional_headers={"Authorization": f"Bearer {secret}"})
    response = refused.value.response
    assert response.status_code == 429
    limits = {name.lower(): value for name, value in response.headers.raw_items()
              if name.lower().startswith("x-ratelimit-")}
    assert limits["x-ratelimit-limit-requests"] == "50", limits  # the key's
    assert limits["x-ratelimit-limit-tokens"] == "100000", limits
