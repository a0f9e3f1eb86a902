"""A refusal whose wait the SDKs will not sleep carries `x-should-retry: false` (revgov
review of govacct): a TPM debt now stands until refilled, so a key's 429 may say to wait
an hour. The openai SDK sleeps a `retry-after` of up to two minutes (openai/_constants.py
`MAX_RETRY_AFTER_DELAY`; older releases and other SDKs up to 60 s); past it the older
ones retried at once on their own backoff, refused each time. A wait the SDK does sleep
(up to two minutes) keeps its retry: a client that waits is let through."""

from __future__ import annotations

from openai._constants import MAX_RETRY_AFTER_DELAY

from azure_openai_proxy.gateway.governed import limit_refusal
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from tests.unit.test_sharedlimits import Clock


def _refusal_after(used: int) -> Refusal:
    """The refusal of a 10-token request after one reserved 10 was billed `used`, on a
    key of 1,000 TPM."""
    limiter = RateLimiter(Clock())
    plan = limiter.plan("k", Limits(rpm=100, tpm=1000), None, None)
    taken = limiter.take(plan, 10)
    assert isinstance(taken, Admission)
    limiter.settle(taken, used)
    refused = limiter.take(plan, 10)
    assert isinstance(refused, Refusal)
    return refused


def test_a_wait_longer_than_the_sdk_sleeps_says_not_to_retry() -> None:
    refusal = _refusal_after(50_010)  # ~49 minutes owed
    assert refusal.retry_after > MAX_RETRY_AFTER_DELAY
    headers = limit_refusal(refusal).headers()
    assert headers["x-should-retry"] == "false"
    assert int(headers["retry-after"]) > MAX_RETRY_AFTER_DELAY  # still said


def test_a_wait_the_sdk_sleeps_keeps_its_retry() -> None:
    refusal = _refusal_after(2_500)  # 1,500 owed: a wait of about 90 s
    assert 60 < refusal.retry_after <= MAX_RETRY_AFTER_DELAY
    assert "x-should-retry" not in limit_refusal(refusal).headers()
