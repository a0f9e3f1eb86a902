"""A chained Responses turn that reaches another worker than its predecessor counts the
predecessor's tokens, not a guess (gateway/chained.py, governance/sharedcontext.py):
with `--workers 2` each worker's table was its own, and a turn landing on the other
worker reserved a guess fitted to the key's minute (refused to wait for a full one while
any of it was used). A real gateway process with two workers, the emulator behind it;
each turn on a keep-alive connection whose worker is known."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.test_shared_limits import two_workers


def _connections_per_worker(port: int, deadline: float) -> dict[int, httpx.Client]:
    """One open keep-alive connection to each of the two workers, by pid."""
    clients: dict[int, httpx.Client] = {}
    for _ in range(200):  # bounded in count and time
        if len(clients) == 2 or time.monotonic() > deadline:
            break
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                              limits=httpx.Limits(max_connections=1))
        answer = client.get("/health/deployments",
                            headers={"Authorization": f"Bearer {CLIENT_KEY}"})
        worker = json.loads(answer.content)["worker"]
        if worker in clients:
            client.close()
        else:
            clients[worker] = client
    return clients


def _turn(client: httpx.Client, secret: str, **body: Any) -> httpx.Response:
    return client.post("/v1/responses", headers={"Authorization": f"Bearer {secret}"},
                       json={"model": "gpt-4o", "max_output_tokens": 16, **body})


def test_a_turn_on_the_other_worker_counts_its_predecessor_not_a_guess(
        tmp_path: Path) -> None:
    limits = Limits(rpm=100, tpm=100_000)
    with two_workers(tmp_path, limits) as (emulator, _, client, secret):
        clients = _connections_per_worker(client.port, time.monotonic() + 30)
        try:
            assert len(clients) == 2
            one, other = clients.values()
            first = _turn(one, secret, input="hi")
            assert first.status_code == 200, first.text
            turn: dict[str, Any] = first.json()
            for _ in range(3):  # back and forth: each worker reads the other's
                one, other = other, one
                chained = _turn(one, secret, input="again", previous_response_id=turn["id"])
                # a guess (128,000 cut to the minute) would wait for a full minute (429)
                # or take all of it (remaining 0)
                assert chained.status_code == 200, chained.text
                assert int(chained.headers["x-ratelimit-remaining-tokens"]) > 90_000
                turn = chained.json()
            assert len([r for r in emulator.requests() if r["status"] == 200]) == 4
        finally:
            for opened in clients.values():
                opened.close()
