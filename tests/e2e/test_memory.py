"""No request's memory outlives it: the gateway as users run it (the console script, the
Go tool's env mode: passthrough keys), its resident memory read from /proc while large
requests that Azure refuses arrive one after another."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import Emulator
from tests.processes import cli, running

_BODY_MB = 20
_REQUESTS = 6


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def post(port: int, body: bytes, key: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v1/chat/completions", body=body,
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_large_requests_refused_by_azure_do_not_stay_in_memory(
    emulator: Emulator, reserve_port: Callable[[], int]
) -> None:
    # A chat body of ~20 MB: one long message, so the gateway parses it (a dict and its
    # strings) and forwards it; Azure (the emulator) refuses the bogus passthrough key.
    text = "x" * (_BODY_MB * 1024 * 1024)
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).encode()
    port = reserve_port()
    env = {"AZURE_OPENAI_ENDPOINT": emulator.url + "/", "AZURE_OPENAI_PROXY_LOG_LEVEL": "warning"}
    with running(cli("-l", f"127.0.0.1:{port}"), port=port, env=env) as gateway:
        pid = gateway.popen.pid
        assert post(port, b'{"model": "gpt-4o", "messages": []}', "bogus-key") == 401
        baseline = rss_mb(pid)
        after: list[float] = []
        for _ in range(_REQUESTS):
            assert post(port, body, "bogus-key") == 401
            after.append(rss_mb(pid))
    # Each request holds its body at least twice (raw and parsed): with the bodies kept
    # alive by a reference cycle, the worker grew by ~40 MB per request (280 MB over six);
    # freed, it stays near the peak of one request.
    growth = after[-1] - baseline
    assert growth < 3 * _BODY_MB, (baseline, after)
