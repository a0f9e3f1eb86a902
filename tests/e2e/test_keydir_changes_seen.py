"""Each worker reads only the keys and teams a write changed (the store's change log), and
every kind of change still reaches every worker (within a poll or two): a team blocked
and unblocked, a key moved into a blocked team, an expiry set in the past, a rotation
without grace, a key made by the CLI, and a block written by a writer that knows
nothing of the log (an older CLI, a hand edit: the log's triggers record it)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.pools import pool_config, pool_emulator
from tests.e2e.test_reload_shutdown import gateway_process
from tests.e2e.test_shared_limits import _worker_pids
from tests.hand_edits import hand_write
from tests.waiting import until

# A poll is 0.5 s; the bound only stops a hang (a 2-core machine under load can delay
# a worker's poll well past a second), the checks are repeated until it.
_BOUND, _BETWEEN = 30.0, 0.2


def _statuses(port: int, secret: str, calls: int = 12) -> set[int]:
    """One status per fresh connection (the kernel spreads them over the workers), from
    one client: a client each (test_revoked_across_workers') loads the CA bundle each
    time, seconds of this test on a loaded machine."""
    with httpx.Client(timeout=10) as http:
        return {http.get(f"http://127.0.0.1:{port}/v1/models",
                         headers={"Authorization": f"Bearer {secret}",
                                  "Connection": "close"}).status_code for _ in range(calls)}


@pytest.mark.timeout(180)  # two workers started and ~200 requests, on a loaded machine
def test_every_kind_of_change_reaches_every_worker(tmp_path: Path) -> None:
    config, database = tmp_path / "config.yaml", tmp_path / "gw.db"
    store = KeyStore.open(database)
    try:
        now = time.time()
        store.create_team("research", now=now)
        store.create_team("closed", now=now)
        _, member = store.create_key("member", team="research", now=now)
        moved_key, moved = store.create_key("moved", now=now)
        expiring_key, expiring = store.create_key("expiring", now=now)
        rotated_key, rotated = store.create_key("rotated", now=now)
        hand_key, hand = store.create_key("by-hand", now=now)
        secrets = (member, moved, expiring, rotated, hand)
        with pool_emulator() as emulator:
            config.write_text(yaml.safe_dump({
                **pool_config(emulator.url, [("dep-a", {})]),
                "database": f"sqlite:///{database}", "log_level": "warning"}))
            with gateway_process(config, "--workers", "2") as (_, client):
                assert len(_worker_pids(client.port, 2, time.monotonic() + 30)) == 2
                assert [_statuses(client.port, s) for s in secrets] == [{200}] * 5
                store.update_team("research", {"blocked": True})
                store.update_team("closed", {"blocked": True})
                store.update_key(moved_key.id, {"team_id": "closed"})
                store.update_key(expiring_key.id, {"expires_at": time.time() - 1})
                _, new = store.rotate_key(rotated_key.id, grace_seconds=0, now=time.time())
                _, made = store.create_key("made-now", now=time.time())
                hand_write(database, "UPDATE keys SET blocked = 1 WHERE id = ?", hand_key.id)
                # (Waited for, not slept: on a loaded machine a poll can come late.)
                until(lambda: [_statuses(client.port, s) for s in secrets] == [{401}] * 5,
                      _BOUND, "a change not seen by every worker", _BETWEEN)
                assert _statuses(client.port, new) == {200}
                assert _statuses(client.port, made) == {200}
                store.update_team("research", {"blocked": False})
                until(lambda: _statuses(client.port, member) == {200},
                      _BOUND, "an unblocked team not seen by every worker", _BETWEEN)
    finally:
        store.close()
