"""A TPM debt is repaid (govacct audit): Azure's usage far over a request's reservation
(an input the estimate cannot read: a PDF's pages, `input_audio`, a file named by id) left
the bucket at most one minute below zero, so a key of 1,000 tokens a minute sending a
request billed 50,000 tokens every two minutes used 25 times its limit, for good. The
debt now stands until refilled: at most a day's allowance (an upstream's absurd usage
cannot hold a key off for longer). The usual plan's short path (both of its settles),
the general one and the workers' shared table alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock

WAYS = ["usual", "usual_usage", "general", "shared"]


def _limiter(shared: SharedWorkers, way: str, clock: Clock) -> tuple[
        Callable[[int], bool | Refusal], Callable[[int], None]]:
    """(take(tokens): True or the refusal, settle(used) of the last take) of key k with a
    TPM of 1,000, taken `way`."""
    limits = Limits(rpm=1000, tpm=1000)
    if way in ("general", "shared"):
        limits = Limits(rpm=1000, tpm=1000, max_parallel=5)  # not the usual plan
    limiter = shared.limiter(shared.table(), 0, clock) if way == "shared" else RateLimiter(clock)
    plan = limiter.plan("k", limits, None, None)
    usual = plan.usual
    last: list[object] = []

    def take(tokens: int) -> bool | Refusal:
        result = usual.take(tokens) if usual is not None else limiter.take(plan, tokens)
        if isinstance(result, Refusal):
            return result
        last[:] = [result, tokens]
        return True

    def settle(used: int) -> None:
        taken, reserved = last
        if isinstance(taken, Admission):
            limiter.settle(taken, used)
        elif way == "usual_usage":
            assert usual is not None
            assert usual.settle_usage(reserved, {"prompt_tokens": used - 10,  # type: ignore[arg-type]
                                                 "completion_tokens": 10})
        else:
            assert usual is not None
            usual.settle(reserved, used)  # type: ignore[arg-type]

    assert (usual is not None) == way.startswith("usual")
    return take, settle


@pytest.mark.parametrize("way", WAYS)
def test_usage_far_over_the_reservation_is_repaid(shared: SharedWorkers, way: str) -> None:
    clock = Clock()
    take, settle = _limiter(shared, way, clock)
    assert take(10) is True
    settle(50_010)  # 50,000 over: the bucket at 990 - 50,000
    clock.now += 120  # the floor at -1,000 had it full again by now
    refused = take(10)
    assert isinstance(refused, Refusal) and refused.kind == "tokens"
    assert refused.retry_after == pytest.approx((10 + 49_010 - 2_000) / (1000 / 60))
    clock.now += refused.retry_after - 1
    assert isinstance(take(10), Refusal)
    clock.now += 1.01
    assert take(10) is True


@pytest.mark.parametrize("way", WAYS)
def test_a_debt_is_at_most_a_days_allowance(shared: SharedWorkers, way: str) -> None:
    clock = Clock()
    take, settle = _limiter(shared, way, clock)
    assert take(10) is True
    settle(10**15)  # an upstream's absurd usage
    refused = take(10)
    assert isinstance(refused, Refusal)
    assert refused.retry_after <= 86_400 + 1
    clock.now += 86_400 + 1
    assert take(10) is True
