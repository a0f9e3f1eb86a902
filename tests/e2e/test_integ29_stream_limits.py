"""Seams of session 29 (integration review): a virtual key's streams carry the key's
`x-ratelimit-*` limits, not Azure's, on every path its request can take through
`Gateway.handle` since govcut inlined the usual chat's head lines and rereads made a
Responses request await its stream claim (`stream_claim`) before the limits take it:
a usual chat stream, a Responses stream POSTed, and a background response's stream
resumed (`GET responses/{id}?stream=true`). Real gateway, real emulator, loopback; the
key's limits differ from the emulator's own so a relayed Azure header is told apart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway  # noqa: F401
from tests.support import ServerThread
from tests.waiting import until

_RPM, _TPM = 917, 123_457  # the key's: no emulator answer says these


def _limits_of(headers: httpx.Headers) -> dict[str, str]:
    return {name: value for name, value in headers.items()
            if name.lower().startswith("x-ratelimit-")}


def _assert_keys_limits(headers: httpx.Headers) -> None:
    limits = _limits_of(headers)
    assert limits.get("x-ratelimit-limit-requests") == str(_RPM), limits
    assert limits.get("x-ratelimit-limit-tokens") == str(_TPM), limits
    assert "x-ratelimit-remaining-requests" in limits, limits
    assert "x-ratelimit-remaining-tokens" in limits, limits


def test_every_virtual_key_stream_carries_the_keys_limits(
        ledger_gateway: Callable[..., ServerThread], emulator: Emulator,  # noqa: F811
        tmp_path: Path) -> None:
    gateway = ledger_gateway(emulator)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "limited", rpm=_RPM, tpm=_TPM)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        chat = client.post("/v1/chat/completions", json={
            "model": "gpt-4o", "stream": True, "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200, chat.text
        assert "data: [DONE]" in chat.text
        _assert_keys_limits(chat.headers)

        posted = client.post("/v1/responses", json={
            "model": "gpt-4o", "input": "hello", "stream": True, "background": True,
            "max_output_tokens": 20})
        assert posted.status_code == 200, posted.text
        _assert_keys_limits(posted.headers)
        first = next(line for line in posted.text.splitlines() if line.startswith("data: "))
        response_id = str(json.loads(first[6:])["response"]["id"])

        def done() -> bool:
            read = client.get(f"/v1/responses/{response_id}")
            return read.status_code == 200 and read.json().get("status") == "completed"

        until(done, timeout=20, message="the background response never completed")
        resumed = client.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        assert resumed.status_code == 200, resumed.text
        assert resumed.headers["content-type"].startswith("text/event-stream")
        _assert_keys_limits(resumed.headers)
