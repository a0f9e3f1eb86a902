"""The server's balancer adapter with a fake clock: leases update the live state, and
giving up becomes the error the client sees."""

from __future__ import annotations

import random

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import NoDeploymentAvailable, RateLimited, UpstreamHttpError, UpstreamTimeout
from azure_openai_proxy.gateway.balancer import Balancer, failure_reason
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import RoutingTable


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def balancer(**extra: object) -> tuple[Balancer, object, Clock]:
    settings = load_settings({"models": {"m": [
        {"deployment_name": "a", "endpoint": "https://a.example.com", "api_key": "k"},
        {"deployment_name": "b", "endpoint": "https://b.example.com", "api_key": "k"},
    ]}, "client_keys": ["c"], **extra}, {})
    clock = Clock()
    return Balancer(settings, clock=clock, rng=random.Random(0)), RoutingTable(settings).resolve("m"), clock


def rate_limited(ms: int) -> UpstreamHttpError:
    return UpstreamHttpError(429, {"error": {"message": "slow down", "code": "429"}},
                             {"retry-after-ms": str(ms)})


def test_a_429_answer_cools_down_and_quota_headers_are_read() -> None:
    b, pool, _ = balancer()
    run = b.failover(pool, 10)
    first = run.next_step()
    assert not isinstance(first, float)
    lease = run.begin(first)
    lease.answered(429, {"retry-after-ms": "2500", "x-ratelimit-remaining-tokens": "0"})
    lease.done()
    state = b.state.of(first)
    assert state.cooldown_until == 102.5 and state.in_flight == 0
    assert state.tokens is not None and state.tokens.remaining == 0
    assert state.breaker.state == "closed"


def test_a_429_without_retry_after_uses_the_configured_cooldown() -> None:
    b, pool, _ = balancer(cooldown_seconds=4)
    lease = b.failover(pool, 10).begin(pool.deployments[0])
    lease.answered(429, {})
    assert b.state.of(pool.deployments[0]).cooldown_until == 104.0


def test_every_deployment_rate_limited_gives_azures_429_with_the_shortest_wait() -> None:
    b, pool, _ = balancer(retry_budget_seconds=1)
    run = b.failover(pool, 10)
    for wait_ms in (9000, 4000):
        deployment = run.next_step()
        assert not isinstance(deployment, float)
        lease = run.begin(deployment)
        lease.answered(429, {"retry-after-ms": str(wait_ms)})
        lease.done()
        run.failed(rate_limited(wait_ms))
    with pytest.raises(UpstreamHttpError) as caught:
        run.next_step()
    assert caught.value.http_status == 429
    assert caught.value.headers()["retry-after-ms"] == "4000"
    assert caught.value.headers()["retry-after"] == "4"
    # A new request, with nothing to go on but the state: our own 429.
    with pytest.raises(RateLimited) as fresh:
        b.failover(pool, 10).next_step()
    assert fresh.value.headers()["retry-after-ms"] == "4000"


def test_open_circuits_give_503_and_a_probe_left_unanswered_is_released() -> None:
    b, pool, clock = balancer(circuit_failures=1, circuit_open_seconds=6)
    for deployment in pool.deployments:
        lease = b.failover(pool, 10).begin(deployment)
        lease.failed("timeout")
        lease.done()
    with pytest.raises(NoDeploymentAvailable) as caught:
        b.failover(pool, 10).next_step()
    assert caught.value.headers()["retry-after"] == "6"
    clock.now += 6
    probe = b.failover(pool, 10)
    deployment = probe.next_step()
    assert not isinstance(deployment, float)
    lease = probe.begin(deployment)
    assert b.state.of(deployment).breaker.state == "half-open"
    lease.done()  # the client left before an answer
    assert b.state.of(deployment).breaker.available(clock.now)


def test_latency_is_learnt_from_successful_answers_only() -> None:
    b, pool, clock = balancer()
    deployment = pool.deployments[0]
    lease = b.failover(pool, 10).begin(deployment)
    clock.now += 0.2
    lease.answered(200, {})
    lease.done()
    lease = b.failover(pool, 10).begin(deployment)
    clock.now += 5
    lease.answered(400, {})
    lease.done()
    assert b.state.of(deployment).latency_ms == pytest.approx(200.0)


def test_failure_reasons_are_short_labels() -> None:
    assert failure_reason(rate_limited(1)) == "429"
    assert failure_reason(UpstreamTimeout("slow")) == "timeout"


def _one_deployment(**extra: object) -> tuple[Balancer, object, Clock]:
    settings = load_settings({"models": {"m": [
        {"deployment_name": "a", "endpoint": "https://a.example.com", "api_key": "k"},
    ]}, "client_keys": ["c"], **extra}, {})
    clock = Clock()
    return Balancer(settings, clock=clock, rng=random.Random(0)), RoutingTable(settings).resolve("m"), clock


def test_the_sole_deployment_that_is_up_is_tried_first_without_a_run() -> None:
    b, pool, clock = _one_deployment()
    member = b.sole_ready(pool, clock.now)
    assert member is not None and member.settings is pool.deployments[0]
    two, pool_of_two, _ = balancer()
    assert two.sole_ready(pool_of_two, clock.now) is None  # a pool of two: the run orders it
    lease = b.failover(pool, 0).begin(pool.deployments[0])
    lease.answered(429, {"retry-after-ms": "2000"})
    lease.done()
    assert b.sole_ready(pool, clock.now) is None  # cooling down: the run decides (waits)


@pytest.mark.parametrize("status", [429, 503, 500])
def test_a_run_made_after_the_first_attempt_goes_on_as_one_made_before_it(status: int) -> None:
    """The first attempt made through `sole_ready` and `lease`, its run made only once
    it failed (`failover(..., tried=)`), gives the next steps a run made first gives."""
    steps = []
    for lazy in (False, True):
        b, pool, clock = _one_deployment(retry_budget_seconds=5, max_attempts=3)
        started = clock.now
        if lazy:
            member = b.sole_ready(pool, started)
            assert member is not None
            lease = b.lease(member, _record(), started)
        else:
            run = b.failover(pool, 0, started)
            deployment = run.next_step()
            assert not isinstance(deployment, float)
            lease = run.begin(deployment)
        lease.answered(status, {"retry-after-ms": "1500"})
        lease.done()
        clock.now += 0.5
        if lazy:
            run = b.failover(pool, 0, started, member)
        error = UpstreamHttpError(status, {"error": {"message": "x", "code": str(status)}},
                                  {"retry-after-ms": "1500"})
        run.failed(error)
        outcome: list[object] = []
        for _ in range(3):
            try:
                step = run.next_step()
            except Exception as exc:  # giving up: the error the client would get
                outcome.append((type(exc).__name__, exc.http_status))  # type: ignore[attr-defined]
                break
            outcome.append(step if isinstance(step, float) else step.deployment_name)
            clock.now += 2.0
        steps.append(outcome)
    assert steps[0] == steps[1] and steps[0]  # (429: a wait, then the same deployment)


def _record() -> RequestRecord:
    return RequestRecord("id", "POST")
