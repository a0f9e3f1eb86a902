"""A database swapped in under a running gateway at the same change log position as the
one it replaces (a copy that went its own way with as many writes: branch storeleft reads
it whole, its log's mark differs), with other limits for a key. The rows' versions are log
positions (governance/sharedrows.py), so its limits were of the same version as the
replaced database's in the rows: neither written nor followed, the replaced database's
limits held in every worker until the key changed again."""

from __future__ import annotations

from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import admitted


def _limit(limiter: RateLimiter, limits: Limits) -> str | None:
    taken = admitted(limiter.take(limiter.plan("k", limits, None, None), 0))
    limiter.settle(taken, 0)
    return taken.headers.get("x-ratelimit-limit-requests")


def test_another_database_at_the_same_position_sets_its_limits(shared: SharedWorkers) -> None:
    _, clock, first, second = shared.pair()
    replaced, swapped = Limits(rpm=100), Limits(rpm=5, tpm=1000)
    for limiter in (first, second):
        limiter.forget(LoadedLimits({"key:k": replaced}, 10, frozenset({"key:k"})))
        assert _limit(limiter, replaced) == "100"
    # The key directory's whole read of the swapped database: what differs from before.
    first.forget(LoadedLimits({"key:k": swapped}, 10, frozenset({"key:k"}), whole=True))
    assert _limit(first, swapped) == "5"
    assert _limit(second, replaced) == "5"  # yet to read it: follows the row at once
    second.forget(LoadedLimits({"key:k": swapped}, 10, frozenset({"key:k"}), whole=True))
    for limiter in (first, second):
        taken = admitted(limiter.take(limiter.plan("k", swapped, None, None), 10))
        assert taken.headers.get("x-ratelimit-limit-tokens") == "1000"
        limiter.settle(taken, 10)
    # A later change to it is newer than the swap, in either worker.
    clock.now += 60.0
    second.forget(LoadedLimits({"key:k": replaced}, 11, frozenset({"key:k"})))
    assert _limit(first, swapped) == "100"
    # And a swap to another such copy (at that position again) is read too.
    clock.now += 60.0
    first.forget(LoadedLimits({"key:k": swapped}, 11, frozenset({"key:k"}), whole=True))
    assert _limit(second, replaced) == "5"
    assert _limit(first, swapped) == "5"
