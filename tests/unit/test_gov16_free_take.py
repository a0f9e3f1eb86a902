"""A request that reserves no tokens (`responses/input_tokens`, a free count: Azure runs
no model and spends none of the deployment's tokens) is never refused by a TPM, even one
in debt (a request that used more than it reserved leaves the bucket below zero, down
to a day's allowance): it still takes a request slot and an in-flight slot. Before, a key whose last
chat used more than its estimate was refused its token count, `tokens > level` with 0
tokens and a negative level. The usual plan's short path, the general one and the
workers' shared table alike."""

from __future__ import annotations

import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock


@pytest.mark.parametrize(("way", "limits"), [
    ("usual", Limits(rpm=5, tpm=1000)),
    ("general", Limits(rpm=5, tpm=1000, max_parallel=3)),
    ("shared", Limits(rpm=5, tpm=1000, max_parallel=3)),
])
def test_a_tpm_in_debt_refuses_no_request_of_no_tokens(shared: SharedWorkers, way: str,
                                                       limits: Limits) -> None:
    clock = Clock()  # frozen: nothing refills
    limiter = shared.limiter(shared.table(), 0, clock) if way == "shared" else RateLimiter(clock)
    plan = limiter.plan("k", limits, None, None)
    assert (plan.usual is not None) == (way == "usual")
    chat = limiter.take(plan, 900)
    assert isinstance(chat, Admission)
    limiter.settle(chat, 1600)  # Azure said it used more: the bucket is at -600
    refused = limiter.take(plan, 1)
    assert isinstance(refused, Refusal) and refused.kind == "tokens"
    for _ in range(4):  # the count takes no tokens: the debt does not stop it
        count = limiter.take(plan, 0)
        assert isinstance(count, Admission)
        limiter.settle(count, None)
    limited = limiter.take(plan, 0)  # the key's five requests a minute are spent
    assert isinstance(limited, Refusal) and limited.kind == "requests"
