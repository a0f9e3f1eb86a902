"""Two workers' key directories, each with its limiter sharing one rate-limit table, and
another database restored into their file with the backup API at the same change log
position (a copy that went its own way with as many writes): storeleft reads it whole
(the log's mark there differs), sharedver's review writes its limits into the shared row
(governance/sharedrows.py). Checked only in a scratch merge until both were on main; on
sharedver without its review's fix the replaced database's limits held in both workers
(the row's version equal to the position read, neither written nor followed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.store.keys import KeyStore
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_revkeydir_replaced import _restore
from tests.unit.test_sharedlimits import admitted

NOW = 1_000_000.0


def _headers(limiter: RateLimiter, caller: Caller) -> dict[str, str]:
    key = caller.key
    assert key is not None
    taken = admitted(limiter.take(limiter.plan(key.id, key.limits, None, None), 10))
    limiter.settle(taken, 10)
    return taken.headers


def test_a_database_restored_at_the_same_position_sets_both_workers_limits(
        tmp_path: Path, shared: SharedWorkers) -> None:
    path, other = tmp_path / "gateway.db", tmp_path / "other.db"
    store = KeyStore.open(path)
    key, secret = store.create_key("k", limits=Limits(rpm=100), now=NOW)
    _restore(path, other)
    store.create_key("only-here", now=NOW)  # one write here...
    store.close()
    elsewhere = KeyStore.open(other)
    elsewhere.update_key(key.id, {"limits": {"rpm": 5, "tpm": 1000}})  # ...one there
    elsewhere.close()
    _, _, *limiters = shared.pair()
    directories = [KeyDirectory(path, clock=lambda: NOW) for _ in limiters]
    for directory, limiter in zip(directories, limiters, strict=True):
        directory.on_reload = limiter.forget

    async def run() -> None:
        first, second = directories
        for directory in directories:
            await directory.refresh()
        position = first._position
        assert second._position == position
        old = second.authenticate(secret)  # the second worker's caller from before
        for directory, limiter in zip(directories, limiters, strict=True):
            assert _headers(limiter, directory.authenticate(secret))[
                "x-ratelimit-limit-requests"] == "100"
        _restore(other, path)  # `sqlite3 gateway.db ".restore other.db"`: the same file
        await first.refresh()
        assert first._position == position  # the same log position, another database
        caller = first.authenticate(secret)
        assert caller.key is not None and caller.key.limits == Limits(rpm=5, tpm=1000)
        assert _headers(limiters[0], caller)["x-ratelimit-limit-requests"] == "5"
        # The second worker, yet to read it, follows the shared row at once.
        assert _headers(limiters[1], old)["x-ratelimit-limit-requests"] == "5"
        await second.refresh()
        for directory, limiter in zip(directories, limiters, strict=True):
            headers = _headers(limiter, directory.authenticate(secret))
            assert headers["x-ratelimit-limit-requests"] == "5"
            assert headers["x-ratelimit-limit-tokens"] == "1000"
        for directory in directories:
            await directory.close()

    asyncio.run(run())
