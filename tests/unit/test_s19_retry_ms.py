"""A refusal's `retry-after-ms` is never shorter than the wait: a client that waits
exactly the header's milliseconds (as the SDKs do) is then admitted, not refused again a
token short (found by session 19's flaky-test investigation)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.governed import limit_refusal
from azure_openai_proxy.governance.buckets import Refusal
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=300, deadline=None)
@given(spent=st.integers(1, 99_999), tpm=st.sampled_from([1_000, 60_000, 100_000, 777_777]))
def test_waiting_the_header_s_milliseconds_admits_the_request(spent: int, tpm: int) -> None:
    spent = min(spent, tpm)
    clock = Clock()
    limiter = RateLimiter(clock)
    subjects = [("key:a", Limits(tpm=tpm))]
    assert isinstance(limiter.admit(subjects, spent), Admission)
    refusal = limiter.admit(subjects, tpm)  # the whole minute: waits for all of `spent`
    assert isinstance(refusal, Refusal) and not refusal.never
    error = limit_refusal(refusal)
    wait_ms = int(error.headers()["retry-after-ms"])
    # a microsecond more: the request's own way to the gateway (the float refill may
    # land a hair under the level at the exact instant)
    clock.now += wait_ms / 1000 + 1e-6
    assert isinstance(limiter.admit(subjects, tpm), Admission), (wait_ms, refusal.retry_after)


def test_a_wait_of_a_fraction_of_a_millisecond_over_is_rounded_up() -> None:
    refusal = Refusal("key:a", "tokens", 0.0014, {})
    assert limit_refusal(refusal).headers()["retry-after-ms"] == "2"
