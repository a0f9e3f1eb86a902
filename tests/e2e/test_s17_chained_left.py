"""A chained Responses turn or compaction whose client leaves before the answer is
recorded (and its budget settled) with the context it made Azure read (review of
a71731a): its hold counted that context (`chained.reserve`), but the estimate written
when no usage came back was the body's alone (a few tokens in, the default out), so a
budgeted key could compact or continue a 4,000-token conversation and hang up, charged
for ~1,000 tokens each time. Non-streamed (Azure finishes and bills it) and streamed (the
client leaves after the first frames) alike."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Emulator, emulator_config
from tests.e2e.test_ledger import (  # noqa: F401  (fixtures)
    _virtual_key,
    ledger_gateway,
    records,
    sdk,
)
from tests.support import ServerThread, serve
from tests.waiting import until


@pytest.fixture
def paced_emulator() -> Iterator[Emulator]:
    """Azure's first byte 600 ms after the request (a client can leave before it), then
    a token every 50 ms (a stream still runs when its client leaves after the head)."""
    from azure_openai_proxy.emulator import create_emulator_app

    with serve(lambda: create_emulator_app(emulator_config(ttft_ms=600, token_ms=50))) as server:
        yield Emulator(server)


def _leave(gateway: ServerThread, emulator: Emulator, secret: str, path: str,
           body: dict[str, Any], stream: bool) -> None:
    """POST `body` on a raw connection; close it once Azure has the request (or, for a
    stream, once its first bytes came back)."""
    seen = len(emulator.requests())
    host, port = gateway.url.split("//")[1].split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".encode()
                     + secret.encode() + b"\r\nContent-Type: application/json\r\n"
                     + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        until(lambda: len(emulator.requests()) > seen, 10, "Azure never got the request")
        if stream:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(("path", "stream"), [("/v1/responses/compact", False),
                                              ("/v1/responses", False),
                                              ("/v1/responses", True)],
                         ids=["compact", "turn", "streamed-turn"])
def test_a_chained_request_left_is_recorded_with_its_context(
    paced_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path, path: str, stream: bool,
) -> None:
    gateway = ledger_gateway(paced_emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "b", budget_usd=50.0,
                                  budget_period="daily")
    first = sdk(gateway, secret).responses.create(
        model="gpt-4o", input=[{"role": "user", "content": "word " * 4000}],
        max_output_tokens=16)
    assert first.usage is not None and first.usage.total_tokens > 4000
    body: dict[str, Any] = {"model": "gpt-4o", "previous_response_id": first.id,
                            "input": "go on"}
    if stream:  # 400 tokens at 50 ms: 20 s, far longer than the client stays
        body.update(stream=True, max_output_tokens=400)
    _leave(gateway, paced_emulator, secret, path, body, stream)

    def left() -> list[Any]:
        return [r for r in records(gateway) if r.key_id == key_id and r.status == 499]

    until(left, 10, "the request was not recorded")
    [record] = left()
    assert record.usage_source == "estimated"
    assert record.prompt_tokens >= first.usage.total_tokens, (
        record.prompt_tokens, record.completion_tokens, record.cost_usd)
