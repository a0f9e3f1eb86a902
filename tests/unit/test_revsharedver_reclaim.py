"""A worker that finds its row taken by another name claims one again with what it had
(governance/sharedrows.py `reclaim`): when another worker has claimed it first, with
newer limits (of a later version), the row's stand and are followed. Before: the later
claimer wrote its older limits and version over them, and the worker that had read the
newer ones followed the row back to the older (until the other's next reload)."""

from __future__ import annotations

from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock, admitted

# Names whose probing starts at rows 0, 1, 2 and 1 of a table of three rows.
_KEY, _M, _N, _J = "k3", "m2", "n2", "j2"
_OTHER = Limits(rpm=100)


def _use(limiter: RateLimiter, key_id: str) -> None:
    """A request of `key_id` (its limits not loaded: a key of another worker's)."""
    limiter.settle(admitted(limiter.admit([("key:" + key_id, _OTHER)], 0)), 0)


def _limit(limiter: RateLimiter, limits: Limits) -> str | None:
    taken = admitted(limiter.take(limiter.plan(_KEY, limits, None, None), 0))
    limiter.settle(taken, 0)
    return taken.headers.get("x-ratelimit-limit-requests")


def test_a_row_claimed_again_with_newer_limits_is_not_set_back_by_an_older_claim(
        shared: SharedWorkers) -> None:
    spec = shared.table(slots=3)
    clock = Clock(1000.0)
    first, second = shared.limiter(spec, 0, clock), shared.limiter(spec, 1, clock)
    old, new = Limits(rpm=100), Limits(rpm=2)
    for limiter in (first, second):
        limiter.forget(LoadedLimits({"key:" + _KEY: old}, 1, frozenset({"key:" + _KEY})))
        assert _limit(limiter, old) == "100"  # row 0
    _use(first, _M)  # row 1
    clock.now = 1150.0
    _use(first, _N)  # row 2, used last now
    clock.now = 1200.0
    _use(first, _M)
    _use(first, _J)  # row 0: the key's, idle for 200 s (the others are not)
    clock.now = 1300.0
    # The first worker reads the key's new limit: its row is another's, it claims
    # row 2 (idle now) and sets it. The second, yet to read it, finds its row 0
    # taken and claims again: it finds row 2.
    first.forget(LoadedLimits({"key:" + _KEY: new}, 2, frozenset({"key:" + _KEY})))
    assert _limit(second, old) == "2"
    assert _limit(first, new) == "2"
