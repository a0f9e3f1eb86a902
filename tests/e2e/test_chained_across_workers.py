"""A chained Responses turn that reaches another worker than its predecessor, or a
restarted gateway, counts the predecessor's tokens, not a guess (gateway/chained.py,
governance/sharedcontext.py, the database's `chained_context`): with `--workers 2` each
worker's table was its own, and a turn landing on the other worker reserved a guess
fitted to the key's minute (refused to wait for a full one while any of it was used);
after a restart every first turn did. Real gateway processes, the emulator behind them;
with two workers each turn on a keep-alive connection whose worker is known."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.pools import pool_config, pool_emulator
from tests.e2e.test_reload_shutdown import gateway_process
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


def test_a_turn_after_a_restart_counts_its_predecessor_not_a_guess(tmp_path: Path) -> None:
    """The counts are in the database too: a turn chained to a response made before the
    gateway restarted reserved a guess (here the whole minute: remaining 0)."""
    config, database = tmp_path / "config.yaml", tmp_path / "gw.db"
    store = KeyStore.open(database)
    try:
        _, secret = store.create_key("chat", limits=Limits(rpm=100, tpm=100_000),
                                     now=time.time())
    finally:
        store.close()
    with pool_emulator() as emulator:
        config.write_text(yaml.safe_dump({
            **pool_config(emulator.url, [("dep-a", {})]),
            "database": f"sqlite:///{database}", "log_level": "warning"}))
        turn: dict[str, Any] = {}
        for run in range(3):  # a first turn, then one turn after each restart
            with gateway_process(config) as (process, client), httpx.Client(
                    base_url=f"http://127.0.0.1:{client.port}", timeout=30) as http:
                chained = {"previous_response_id": turn["id"]} if turn else {}
                answer = _turn(http, secret, input="again" if turn else "hi", **chained)
                assert answer.status_code == 200, answer.text
                if run:
                    assert int(answer.headers["x-ratelimit-remaining-tokens"]) > 90_000
                turn = answer.json()
                process.signal(signal.SIGTERM)  # a clean stop writes what it noted
                assert process.popen.wait(15) == 0
        assert len([r for r in emulator.requests() if r["status"] == 200]) == 3
