from __future__ import annotations

from azure_openai_proxy.balancing import (
    BreakerRules,
    PoolState,
    key_of,
    remaining_quota,
    retry_after_seconds,
)
from azure_openai_proxy.balancing.circuit import CircuitBreaker
from azure_openai_proxy.balancing.state import DeploymentKey, DeploymentState
from azure_openai_proxy.settings import DeploymentSettings


def dep(name: str = "d1", endpoint: str = "https://east.example.com", **extra: object) -> DeploymentSettings:
    return DeploymentSettings(model_name="gpt-4o", deployment_name=name, endpoint=endpoint,
                              api_key="k", **extra)  # type: ignore[arg-type]


def state() -> DeploymentState:
    return DeploymentState(DeploymentKey("https://e", "d"), CircuitBreaker(3, 10.0))


def test_retry_after_ms_wins_over_seconds_and_bad_values_are_ignored() -> None:
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "7"}) == 0.25
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({"retry-after": "-3"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "999999"}) == 86_400.0


def test_remaining_quota_headers() -> None:
    assert remaining_quota({"x-ratelimit-remaining-requests": "9",
                            "x-ratelimit-remaining-tokens": "1200"}) == (9, 1200)
    assert remaining_quota({"x-ratelimit-remaining-tokens": "x"}) == (None, None)


def test_a_later_shorter_retry_after_never_shortens_a_cooldown() -> None:
    s = state()
    assert s.cool_down(100.0, 10.0)
    assert not s.cool_down(101.0, 1.0)
    assert s.cooldown_until == 110.0
    assert s.cooling(109.9) and not s.available(109.9)
    assert s.cool_down(105.0, 30.0)  # a longer one extends it
    assert s.cooldown_until == 135.0
    assert s.available(135.0)


def test_quota_readings_refill_with_the_configured_rate_and_expire() -> None:
    s = state()
    s.observe_quota(0.0, requests=2, tokens=100)
    assert s.tokens_left(0.0, None) == 100
    assert s.tokens_left(30.0, 600) == 400  # 600 tpm refills 300 in 30 s
    assert s.tokens_left(6.0, 600) == 160
    assert s.tokens_left(30.0, 100) == 100  # never above the quota itself
    assert s.tokens_left(60.0, None) is None  # the minute window rolled over
    assert s.requests_left(5.0, None) == 2
    assert s.requests_left(10.0, None) is None


def test_latency_is_an_ewma() -> None:
    s = state()
    s.observe_latency(100.0, 0.5)
    s.observe_latency(200.0, 0.5)
    assert s.latency_ms == 150.0


def test_pool_state_keeps_state_across_a_reload_for_unchanged_deployments() -> None:
    east, west = dep("d1"), dep("d1", "https://west.example.com")
    before = PoolState.for_deployments([east, west], BreakerRules(3, 10.0))
    before.of(east).cool_down(0.0, 50.0)
    before.of(west).in_flight = 2
    # The reload changes east's weight (same identity) and drops west.
    east_again = dep("d1", weight=5)
    after = PoolState.for_deployments([east_again], BreakerRules(7, 20.0), before)
    assert after.of(east_again) is before.of(east)
    assert after.of(east_again).breaker.threshold == 7
    assert after.get(key_of(west)) is None
    assert after.of(west) is not before.of(west)  # a new, fresh state


def test_default_endpoint_deployments_are_bounded() -> None:
    pool = PoolState.for_deployments([], BreakerRules())
    for i in range(1100):
        pool.of(dep(f"m{i}"))
    assert len(pool) <= 1000
