"""What the key directory hands the limiter at a reload (gateway/keydirectory.py
`on_reload`, governance/loaded.py): its own limits by subject, their version (the change
log's position) and the subjects the read changed, so that the limiter looks at those
alone (before: a copy of every key's limits, and a pass over all of them in the limiter,
4-6 ms of CPU a change at 50,000 keys; bench/README.md, "Session 28"), and
drops only the plans of the keys changed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.store.keys import KeyStore
from tests.unit.test_sharedlimits import Clock


def test_the_key_directory_hands_the_limiter_what_a_read_changed(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path / "gw.db")
    directory = KeyDirectory(tmp_path / "gw.db")
    seen: list[Mapping[str, Limits]] = []
    directory.on_reload = seen.append

    def read(force: bool = False) -> LoadedLimits:
        asyncio.run(directory.refresh(force=force))
        assert isinstance(seen[-1], LoadedLimits)
        return seen[-1]

    try:
        team = store.create_team("t", limits=Limits(rpm=50), now=1.0)
        key, _ = store.create_key("k", team=team.id, limits=Limits(tpm=1000), now=1.0)
        other, _ = store.create_key("o", limits=Limits(rpm=5), now=1.0)
        first = read()
        assert first.whole and first.changed is None  # nothing known before it
        assert dict(first) == {"key:" + key.id: Limits(tpm=1000),
                               "key:" + other.id: Limits(rpm=5), "team:" + team.id: Limits(rpm=50)}
        store.update_key(key.id, {"limits": {"tpm": 2000}})
        changed = read()
        assert not changed.whole and changed.changed == {"key:" + key.id}
        assert changed.version > first.version
        assert changed["key:" + key.id] == Limits(tpm=2000)
        store.update_team(team.id, {"limits": {"rpm": 60}})
        store.delete_key(other.id)
        later = read()
        assert later.changed == {"team:" + team.id, "key:" + other.id}
        assert later.version > changed.version and "key:" + other.id not in later
        store.update_key(key.id, {"limits": {"tpm": 3000}})
        store.update_key(key.id, {"name": "renamed"})
        whole = read(force=True)  # every key and team read: what differs from before
        assert whole.whole and whole.changed == {"key:" + key.id}
        assert whole.version > later.version
    finally:
        asyncio.run(directory.close())
        store.close()


def test_a_reload_drops_only_the_plans_of_the_keys_it_changed() -> None:
    # Every plan was dropped at every change (one epoch): each key in use planned anew
    # at its next request (~16 µs each on a loaded 2-core machine, bench/README.md).
    limiter = RateLimiter(Clock())
    same, team = Limits(rpm=10), Limits(rpm=20)
    loaded = {"key:k1": same, "key:k2": same, "key:k3": same, "key:k4": same, "team:t": team}
    limiter.forget(LoadedLimits(loaded, 1))
    plans = [limiter.plan(f"k{n}", same, "t" if n == 2 else None, team if n == 2 else None)
             for n in (1, 2, 3)]
    epoch = limiter.epoch
    loaded["key:k4"] = Limits(rpm=30)  # a key not in use: nothing planned anew
    limiter.forget(LoadedLimits(loaded, 2, frozenset({"key:k4"})))
    assert limiter.epoch is epoch
    assert limiter.plan("k3", same, None, None) is plans[2]
    loaded["key:k1"] = Limits(rpm=30)
    limiter.forget(LoadedLimits(loaded, 3, frozenset({"key:k1"})))
    assert limiter.plan("k3", same, None, None) is plans[2]
    assert limiter.plan("k2", same, "t", team) is plans[1]
    renewed = limiter.plan("k1", same, None, None)  # a caller from before the reload
    assert renewed is not plans[0] and renewed.subjects[0].rpm == 30.0
    loaded["team:t"] = Limits(rpm=40)  # its keys' plans are made anew
    limiter.forget(LoadedLimits(loaded, 4, frozenset({"team:t"})))
    stale = limiter.plan("k2", same, "t", team)
    assert stale is not plans[1] and stale.subjects[1].rpm == 40.0
    assert limiter.plan("k3", same, None, None) is plans[2]
