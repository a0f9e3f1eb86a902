"""A key revoked, blocked or rotated past its grace stops working on every worker within
about a second (independent review of issue 13: each worker keeps its keys in memory and
its own cache of secrets; the store's change counter is what they poll)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import yaml

from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.pools import pool_config, pool_emulator
from tests.e2e.test_reload_shutdown import gateway_process
from tests.e2e.test_shared_limits import _worker_pids


def _statuses(port: int, secret: str, calls: int = 12) -> set[int]:
    """One status per fresh connection (the kernel spreads them over the workers): one
    client, its connection closed after each answer (a client per call loaded a TLS
    context each time, ~0.1 s of CPU: the polling below made that overrun the test's
    60 s timeout at a load of 25-35)."""
    seen = set()
    with httpx.Client(timeout=10) as http:
        for _ in range(calls):
            seen.add(http.get(f"http://127.0.0.1:{port}/v1/models",
                              headers={"Authorization": f"Bearer {secret}",
                                       "Connection": "close"}).status_code)
    return seen


def _refused_by_all(port: int, *secrets: str) -> bool:
    """Each of `secrets` refused on 12 fresh connections, the first look begun now."""
    return all(_statuses(port, secret) == {401} for secret in secrets)


def test_a_revoked_or_blocked_key_is_refused_by_every_worker_within_a_second(
        tmp_path: Path) -> None:
    config, database = tmp_path / "config.yaml", tmp_path / "gw.db"
    store = KeyStore.open(database)
    try:
        _, revoked = store.create_key("revoked", now=time.time())
        blocked_key, blocked = store.create_key("blocked", now=time.time())
        with pool_emulator() as emulator:
            config.write_text(yaml.safe_dump({
                **pool_config(emulator.url, [("dep-a", {})]),
                "database": f"sqlite:///{database}", "log_level": "warning"}))
            with gateway_process(config, "--workers", "2") as (_, client):
                assert len(_worker_pids(client.port, 2, time.monotonic() + 30)) == 2
                assert _statuses(client.port, revoked) == {200}  # known to both workers
                assert _statuses(client.port, blocked) == {200}
                store.delete_key("revoked")
                store.update_key(blocked_key.id, {"blocked": True})
                changed = time.monotonic()
                while True:  # a poll is 0.5 s: a look begun 1.5 s after the change is
                    # the last (the bound of the sleep this replaces, then one look)
                    began = time.monotonic() - changed
                    if _refused_by_all(client.port, revoked, blocked):
                        break
                    assert began < 1.5, "a worker still lets the revoked or blocked key in"
                # once more (one look's 12 connections could all have reached one worker)
                assert _statuses(client.port, revoked) == {401}
                assert _statuses(client.port, blocked) == {401}
    finally:
        store.close()
