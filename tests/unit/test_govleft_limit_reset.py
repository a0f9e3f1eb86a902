"""An operator's reset of a key's or team's live limits (governance/ratelimit.py
`RateLimiter.reset`, the admin API's `DELETE /admin/limits/{subject}`): its buckets full
again, a TPM debt forgiven, its requests in flight still counted, with one worker and
in the workers' shared table (for every worker). Before, a debt (down to a day's
allowance) could only be waited out."""

from __future__ import annotations

import pytest

from azure_openai_proxy.errors import InvalidRequest, NotFound
from azure_openai_proxy.gateway.governed import reset_limits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter, Refusal
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock, admitted

LIMITS = Limits(rpm=3, tpm=1000, max_parallel=2)


def _owe(limiter: RateLimiter) -> None:
    """The key's minute of requests spent and 49,000 tokens owed, one request held."""
    plan = limiter.plan("k", LIMITS, "t", Limits(tpm=5000))
    limiter.settle(admitted(limiter.take(plan, 100)), 50_000)
    limiter.settle(admitted(limiter.take(plan, 0)), None)
    admitted(limiter.take(plan, 0))  # still in flight


def test_a_reset_forgives_a_debt_and_fills_the_minute_with_one_worker() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    _owe(limiter)
    plan = limiter.plan("k", LIMITS, "t", Limits(tpm=5000))
    refused = limiter.take(plan, 10)
    assert isinstance(refused, Refusal) and refused.retry_after > 60
    assert limiter.reset("key:k") and limiter.reset("team:t")
    view = limiter.snapshot()["key:k"]
    assert view["tokens"]["remaining"] == 1000 and view["requests"]["remaining"] == 3
    assert view["in_flight"] == 1  # the request still running stays counted
    admitted(limiter.take(plan, 900))
    refused = limiter.take(plan, 0)
    assert isinstance(refused, Refusal) and refused.kind == "parallel"


def test_a_reset_in_one_worker_is_every_workers(shared: SharedWorkers) -> None:
    spec, clock, first, second = shared.pair()
    _owe(first)
    plan = second.plan("k", LIMITS, "t", Limits(tpm=5000))
    assert isinstance(second.take(plan, 10), Refusal)
    third = shared.limiter(spec, 1, clock)  # a worker that never saw the key resets it
    assert third.reset("key:k") and third.reset("team:t")
    admitted(second.take(plan, 900))  # the other worker: 1,000 tokens again
    view = first.snapshot()["key:k"]
    assert view["in_flight"] == 2 and view["tokens"]["remaining"] == 100
    assert view["requests"]["remaining"] == 2


def test_a_subject_nothing_is_known_of_is_not_reset(shared: SharedWorkers) -> None:
    assert not RateLimiter(Clock()).reset("key:nobody")
    spec = shared.table()
    assert not shared.limiter(spec, 0, Clock()).reset("key:nobody")


def test_the_admin_routes_answer() -> None:
    limiter = RateLimiter(Clock())
    _owe(limiter)
    assert reset_limits(limiter, "key:k") == {"object": "limits.reset", "subject": "key:k",
                                              "reset": True}
    with pytest.raises(NotFound) as unknown:
        reset_limits(limiter, "key:sk-aop-pasted")
    assert "sk-aop" not in unknown.value.message
    for bad in ("k", "key:", "user:k", ""):
        with pytest.raises(InvalidRequest):
            reset_limits(limiter, bad)
