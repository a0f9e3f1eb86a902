"""The audit of a key's limits under `--workers 2` (govleft): a parallel limit of 1 is
held across both workers while a stream runs, and comes back when its client leaves
mid-stream, or when the worker serving it is killed (SIGKILL: the parent zeroes the
dead worker's column); every refusal meanwhile says the same limit and wait, whichever
worker answers."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from pathlib import Path

import httpx

from azure_openai_proxy.governance.model import Limits
from tests.e2e.test_shared_budgets import _worker_of
from tests.e2e.test_shared_limits import _worker_pids, two_workers
from tests.waiting import until


def _chat(port: int, secret: str) -> httpx.Response:
    with httpx.Client(timeout=30) as http:  # a connection of its own: either worker
        return http.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                         headers={"Authorization": f"Bearer {secret}"},
                         json={"model": "gpt-4o", "max_tokens": 1,
                               "messages": [{"role": "user", "content": "hi"}]})


def _stream(port: int, secret: str) -> http.client.HTTPConnection:
    """A long stream on a connection of its own, its head and first bytes read: one
    request in flight."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/v1/chat/completions", body=json.dumps(
        {"model": "gpt-4o", "max_tokens": 400, "stream": True,
         "messages": [{"role": "user", "content": "a story"}]}),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 200 and answer.read(5) == b"data:"
    return connection


def _refused_alike(port: int, secret: str) -> None:
    refusals = [_chat(port, secret) for _ in range(6)]  # spread over both workers
    assert [r.status_code for r in refusals] == [429] * 6
    assert {(r.headers["retry-after"], r.headers.get("x-ratelimit-limit-requests"))
            for r in refusals} == {("1", None)}
    assert all("in flight" in r.json()["error"]["message"] for r in refusals)


def test_a_parallel_slot_is_held_across_workers_and_comes_back(tmp_path: Path) -> None:
    with two_workers(tmp_path, Limits(max_parallel=1),
                     emulated={"token_ms": 50, "completion_tokens": 400}) as (
            _, process, client, secret):
        port = client.port
        held = _stream(port, secret)
        _refused_alike(port, secret)
        held.close()  # the client leaves mid-stream
        until(lambda: _chat(port, secret).status_code == 200, timeout=10,
              message="an abandoned stream's slot never came back")
        workers = _worker_pids(port, 2, time.monotonic() + 30)
        held = _stream(port, secret)
        _refused_alike(port, secret)
        serving = _worker_of(held, port, workers)
        assert serving is not None
        os.kill(serving, signal.SIGKILL)  # the OOM killer, mid-stream
        until(lambda: _chat(port, secret).status_code == 200, timeout=15,
              message="a killed worker's slot was never given back")
        held.close()
        until(lambda: "replaced by" in process.output(), timeout=30,
              message=process.output())


def test_an_rpm_refusal_says_the_same_wait_and_lines_whichever_worker_answers(
        tmp_path: Path) -> None:
    with two_workers(tmp_path, Limits(rpm=3, tpm=6000)) as (_, _p, client, secret):
        port = client.port
        passed = [_chat(port, secret) for _ in range(3)]
        assert [r.status_code for r in passed] == [200] * 3
        assert [r.headers["x-ratelimit-remaining-requests"] for r in passed] == ["2", "1", "0"]
        refusals = [_chat(port, secret) for _ in range(6)]  # spread over both workers
        assert [r.status_code for r in refusals] == [429] * 6
        assert {(r.headers["x-ratelimit-limit-requests"], r.headers["x-ratelimit-limit-tokens"],
                 r.headers["x-ratelimit-remaining-requests"]) for r in refusals} == {
            ("3", "6000", "0")}
        # A request back every 20 s: each wait is what is left of it, never more, and
        # shorter for a later refusal whichever worker made it.
        waits = [int(r.headers["retry-after-ms"]) for r in refusals]
        assert all(0 < wait <= 20_000 for wait in waits)
        assert waits == sorted(waits, reverse=True)
