"""A limit removed by a worker that holds the key without a row (it served the key while
the key had no limit) while another worker, having read a limit added in between, set the
key's row: the removal is written into the row, so the other worker, yet to reload, stops
counting by the limit at once (governance/sharedrows.py `set_rows`). Before, the worker
that read the removal skipped every subject it held, rowless too: the other counted by
the removed limit until its own reload (found by sharedver's differential test, seed 6,
run 85)."""

from __future__ import annotations

from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import admitted


def _load(limiter: RateLimiter, version: int, limits: Limits) -> None:
    limiter.forget(LoadedLimits({"key:k": limits}, version, frozenset({"key:k"})))


def _limit(limiter: RateLimiter, limits: Limits) -> str | None:
    taken = admitted(limiter.take(limiter.plan("k", limits, None, None), 0))
    limiter.settle(taken, 0)
    return taken.headers.get("x-ratelimit-limit-requests")


def test_a_limit_removed_by_a_worker_holding_the_key_without_a_row_holds_at_once(
        shared: SharedWorkers) -> None:
    _, _, first, second = shared.pair()
    none, added = Limits(), Limits(rpm=10)
    for limiter in (first, second):
        _load(limiter, 1, none)
    assert _limit(second, none) is None  # served without a limit: no row
    _load(first, 2, added)  # a limit added: the first sets the key's row
    assert _limit(first, added) == "10"
    _load(second, 3, none)  # removed again, read by the second (it skipped 2)
    assert _limit(first, added) is None  # yet to reload: follows the removal at once
    assert _limit(second, none) is None
    _load(first, 3, none)
    assert _limit(first, none) is None
