"""A virtual key's limits hold across `--workers N` (issue 13: "limits that multiply by
the number of workers"): a real gateway process with two workers, the emulator behind it."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.pools import pool_config, pool_emulator
from tests.e2e.test_reload_shutdown import gateway_process


def _worker_pids(port: int, want: int, deadline: float) -> set[int]:
    """Pids of the workers that answer `/health/deployments`, once `want` of them did
    (each on a new connection: the kernel spreads them over the workers)."""
    pids: set[int] = set()
    for _ in range(2000):  # bounded in count and time
        if len(pids) >= want or time.monotonic() > deadline:
            break
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/health/deployments",
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Connection": "close"})
        with urllib.request.urlopen(request, timeout=5) as response:
            pids.add(json.loads(response.read())["worker"])
    return pids


@contextmanager
def two_workers(tmp_path: Path, limits: Limits, emulated: dict[str, Any] | None = None,
                **settings: Any) -> Iterator[tuple[Emulator, Any, Any, str]]:
    """A gateway process with two workers (both seen answering) in front of the
    emulator (`emulated`: its config, e.g. a `token_ms` pace), and a virtual key with
    `limits`: (emulator, process, client, its secret). `settings`: more of the gateway's
    config (an `admin_key`). The process is asked to stop (SIGTERM) and must exit
    cleanly."""
    config, database = tmp_path / "config.yaml", tmp_path / "gw.db"
    store = KeyStore.open(database)
    try:
        _, secret = store.create_key("shared", limits=limits, now=time.time())
    finally:
        store.close()
    with pool_emulator(**(emulated or {})) as emulator:
        config.write_text(yaml.safe_dump({
            **pool_config(emulator.url, [("dep-a", {})]),
            "database": f"sqlite:///{database}", "log_level": "warning", **settings}))
        with gateway_process(config, "--workers", "2") as (process, client):
            assert len(_worker_pids(client.port, 2, time.monotonic() + 30)) == 2
            yield emulator, process, client, secret
            process.signal(signal.SIGTERM)
            assert process.popen.wait(15) == 0


def test_an_rpm_of_5_admits_exactly_5_of_a_burst_of_20_across_two_workers(
        tmp_path: Path) -> None:
    with two_workers(tmp_path, Limits(rpm=5)) as (emulator, _, client, secret):
        statuses: list[int] = []
        lock, start = threading.Lock(), threading.Barrier(20)

        def call() -> None:
            start.wait(30)
            with httpx.Client(timeout=30) as http:  # a connection of its own
                response = http.post(
                    f"http://127.0.0.1:{client.port}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {secret}"},
                    json={"model": "gpt-4o", "max_tokens": 1,
                          "messages": [{"role": "user", "content": "hi"}]})
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=call) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(statuses) == [200] * 5 + [429] * 15
        assert len([r for r in emulator.requests() if r["status"] == 200]) == 5
