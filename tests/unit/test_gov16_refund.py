"""A request its limits let through and its budget then refused never reaches Azure:
`RateLimiter.refund` gives back all it took, its request slot included (`settle` gave
back its tokens and in-flight slot only, so each budget refusal spent one of the key's
requests per minute). One worker's limiter and the workers' shared table alike."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import GatewayError
from azure_openai_proxy.gateway.governed import hold
from azure_openai_proxy.governance.budget import BudgetGuard, BudgetHold
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from azure_openai_proxy.routing import Pool
from azure_openai_proxy.settings import DeploymentSettings
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock

LIMITS = Limits(rpm=3, tpm=1000, max_parallel=2)


def _limiters(shared: SharedWorkers | None, clock: Clock) -> tuple[RateLimiter, RateLimiter]:
    """One worker (twice), or two sharing a table (`shared`)."""
    if shared is None:
        one = RateLimiter(clock)
        return one, one
    return shared.pair(clock=clock)[2:]


@pytest.mark.parametrize("together", [False, True])
def test_a_refunded_request_leaves_its_limits_as_they_were(shared: SharedWorkers,
                                                           together: bool) -> None:
    clock = Clock()  # frozen: nothing refills
    first, second = _limiters(shared if together else None, clock)
    for _ in range(10):  # ten budget refusals: each taken, then refunded
        taken = first.take(first.plan("k", LIMITS, None, None), 400)
        assert isinstance(taken, Admission)
        first.refund(taken)
        first.refund(taken)  # twice: nothing more
    # The key's three requests a minute, its 1,000 tokens, its two in flight: all there.
    held = [second.take(second.plan("k", LIMITS, None, None), 300) for _ in range(2)]
    assert all(isinstance(one, Admission) for one in held)
    refused = second.take(second.plan("k", LIMITS, None, None), 300)
    assert isinstance(refused, Refusal) and refused.kind == "parallel"
    for one in held:
        assert isinstance(one, Admission)
        second.settle(one, 300)
    third = second.take(second.plan("k", LIMITS, None, None), 300)
    assert isinstance(third, Admission)
    second.settle(third, 300)
    fourth = second.take(second.plan("k", LIMITS, None, None), 0)
    assert isinstance(fourth, Refusal) and fourth.kind == "requests"


@pytest.mark.parametrize("together", [False, True])
def test_a_refund_never_fills_the_bucket_past_its_limit(shared: SharedWorkers,
                                                        together: bool) -> None:
    clock = Clock()
    limiter, _ = _limiters(shared if together else None, clock)
    plan = limiter.plan("k", LIMITS, None, None)
    taken = limiter.take(plan, 0)
    assert isinstance(taken, Admission)
    clock.now += 3600  # refilled to the full three meanwhile
    limiter.refund(taken)
    results = []
    for _ in range(4):
        one = limiter.take(plan, 0)
        results.append(isinstance(one, Admission))
        if isinstance(one, Admission):
            limiter.settle(one, 0)  # out of flight: only the request bucket counts
    assert results == [True, True, True, False]


def _pool() -> Pool:
    return Pool("gpt-4o", (DeploymentSettings(
        model_name="gpt-4o", deployment_name="gpt-4o",
        endpoint="https://r.openai.azure.com/", api_key="k"),))


def test_a_budget_refusal_in_hold_spends_no_request_of_the_key() -> None:
    """`hold` takes the limits, then the budget: a hold refused there (another request's
    hold took what was left while this one read its body) gave back the tokens only,
    so five such refusals spent the key's RPM of 3 and the requests after them got
    `rate_limit_exceeded` with budget to spare."""
    clock = Clock()
    guard = BudgetGuard(clock)
    guard.prices = PriceTable.shipped()
    key = VirtualKey("k1", "k", "hash", "sk-aop-abc",
                     limits=Limits(rpm=3, budget_usd=0.01, budget_period="daily"))
    caller = Caller(None, key)
    limiter = RateLimiter(clock)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10}
    other = guard.reserve(key, None, 0.01)  # in flight elsewhere: the whole budget
    assert isinstance(other, BudgetHold)
    for _ in range(5):
        with pytest.raises(GatewayError) as refused:
            hold(limiter, guard, caller, body, (_pool(), "gpt-4o"), "chat/completions", 1024)
        assert refused.value.code == "insufficient_quota"
    guard.settle(other, "", 0.0)  # it ended having cost nothing
    for _ in range(3):
        admitted, budget = hold(limiter, guard, caller, body, (_pool(), "gpt-4o"),
                                "chat/completions", 1024)
        assert isinstance(admitted, Admission) and budget is not None
        limiter.settle(admitted, 10)
        guard.settle(budget, "", 0.0)
    with pytest.raises(GatewayError) as limited:
        hold(limiter, guard, caller, body, (_pool(), "gpt-4o"), "chat/completions", 1024)
    assert limited.value.code == "rate_limit_exceeded"
