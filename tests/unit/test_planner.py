"""The failover policy with plain data and a fake clock: every rule of `plan` and
`FailoverRun`."""

from __future__ import annotations

import random

import pytest

from azure_openai_proxy.balancing import (
    FailoverRun,
    GiveUp,
    Member,
    Ordered,
    WaitFor,
    estimated_cost,
    near_quota,
    plan,
    strategy_named,
)
from azure_openai_proxy.balancing.circuit import CircuitBreaker
from azure_openai_proxy.balancing.planner import jitter_bound
from azure_openai_proxy.balancing.state import DeploymentKey, DeploymentState
from azure_openai_proxy.settings import DeploymentSettings

NOW = 1000.0


def member(name: str, priority: int = 1, weight: float = 1.0, tpm: int | None = None) -> Member:
    settings = DeploymentSettings(model_name="m", deployment_name=name, endpoint="https://e.example.com",
                                  api_key="k", priority=priority, weight=weight, tpm=tpm)
    return Member(settings, DeploymentState(DeploymentKey("https://e.example.com", name),
                                            CircuitBreaker(2, 30.0)))


def names(result: object) -> list[str]:
    assert isinstance(result, Ordered), result
    return [m.settings.deployment_name for m in result.candidates]


def run_plan(members: list[Member], deadline: float = NOW + 10, cost: int = 100, **kw: object) -> object:
    return plan(members, now=NOW, deadline=deadline, cost=cost,
                strategy=strategy_named("least-busy"), rng=random.Random(0), **kw)  # type: ignore[arg-type]


def open_circuit(m: Member, at: float = NOW) -> None:
    m.state.breaker.failed(at)
    m.state.breaker.failed(at)
    assert m.state.breaker.state == "open"


def test_priority_two_only_after_all_of_priority_one() -> None:
    a, b, c = member("a", 1), member("b", 1), member("c", 2)
    a.state.in_flight = 5  # least-busy would put c first if priorities were ignored
    assert names(run_plan([c, a, b])) == ["b", "a", "c"]


def test_cooling_and_open_deployments_are_left_out() -> None:
    a, b, c = member("a"), member("b"), member("c", 2)
    a.state.cool_down(NOW, 5.0)
    open_circuit(b)
    assert names(run_plan([a, b, c])) == ["c"]


def test_near_quota_deployments_go_last_even_behind_a_lower_priority() -> None:
    a, b = member("a", 1), member("b", 2)
    a.state.observe_quota(NOW - 1, requests=None, tokens=50)
    assert near_quota(a, NOW, 100)
    assert names(run_plan([a, b], cost=100)) == ["b", "a"]
    assert names(run_plan([a, b], cost=40)) == ["a", "b"]  # enough room for a small request


def test_near_quota_counts_requests_in_flight_and_refill() -> None:
    a = member("a", tpm=6000)
    a.state.observe_quota(NOW, requests=None, tokens=150)
    assert not near_quota(a, NOW, 100)
    a.state.in_flight = 1
    assert near_quota(a, NOW, 100)  # 150 - 100 reserved < 100
    assert not near_quota(a, NOW + 1, 100)  # 6000 tpm refilled 100 tokens in a second
    b = member("b")
    b.state.observe_quota(NOW, requests=0, tokens=None)
    assert near_quota(b, NOW, 1)
    assert not near_quota(b, NOW + 10, 1)  # the 10 s request window has passed


def test_all_cooling_waits_for_the_shortest_when_it_fits_the_budget() -> None:
    a, b = member("a"), member("b")
    a.state.cool_down(NOW, 0.5)
    b.state.cool_down(NOW, 0.2)
    result = run_plan([a, b], deadline=NOW + 1)
    assert isinstance(result, WaitFor) and 0.2 <= result.seconds <= 0.2 + jitter_bound(0.2)


def test_all_cooling_gives_up_with_the_shortest_when_it_does_not_fit() -> None:
    a, b = member("a"), member("b")
    a.state.cool_down(NOW, 8.0)
    b.state.cool_down(NOW, 5.0)
    assert run_plan([a, b], deadline=NOW + 1) == GiveUp("rate_limited", 5.0)


def test_open_circuits_are_not_waited_for_and_give_503_cause() -> None:
    a, b = member("a"), member("b")
    open_circuit(a)
    b.state.cool_down(NOW, 0.5)
    result = run_plan([a, b], deadline=NOW + 60)
    assert isinstance(result, WaitFor) and 0.5 <= result.seconds <= 0.5 + jitter_bound(0.5)  # b only cools
    b.state.cool_down(NOW, 100.0)
    assert run_plan([a, b], deadline=NOW + 60) == GiveUp("unavailable", 30.0)
    assert run_plan([a], deadline=NOW + 60) == GiveUp("unavailable", 30.0)


def test_everything_tried_gives_up() -> None:
    a = member("a")
    assert run_plan([a], excluded=[a.state.key]) == GiveUp("tried_all", None)


def test_run_counts_attempts_and_reports_retries_and_failovers() -> None:
    a, b, c = member("a"), member("b"), member("c")
    run = FailoverRun([a, b, c], deadline=NOW + 10, max_attempts=2, cost=10,
                      strategy=strategy_named("least-busy"), rng=random.Random(1))
    first = run.next_step(NOW)
    assert not isinstance(first, WaitFor | GiveUp) and first.retry_of is None
    run.failed("503")
    second = run.next_step(NOW)
    assert not isinstance(second, WaitFor | GiveUp)
    assert second.retry_of == "503" and second.failover
    assert second.member is not first.member  # a failed deployment is not tried again
    run.failed("timeout")
    assert run.next_step(NOW) == GiveUp("exhausted", 0.0)


def test_run_retries_a_429d_deployment_after_its_cooldown() -> None:
    a = member("a")
    run = FailoverRun([a], deadline=NOW + 10, max_attempts=3, cost=10,
                      strategy=strategy_named("weighted"), rng=random.Random(1))
    run.next_step(NOW)
    a.state.cool_down(NOW, 0.3)
    run.failed("429", rate_limited=True)
    wait = run.next_step(NOW)
    assert isinstance(wait, WaitFor) and 0.3 <= wait.seconds <= 0.3 + jitter_bound(0.3)
    again = run.next_step(NOW + wait.seconds)
    assert not isinstance(again, WaitFor | GiveUp)
    assert again.member is a and again.retry_of == "429" and not again.failover


def test_run_stops_when_the_budget_is_spent() -> None:
    a, b = member("a"), member("b")
    run = FailoverRun([a, b], deadline=NOW + 1, max_attempts=5, cost=10,
                      strategy=strategy_named("weighted"), rng=random.Random(1))
    run.next_step(NOW)
    run.failed("500")
    assert isinstance(run.next_step(NOW + 1.5), GiveUp)


def test_estimated_cost() -> None:
    assert estimated_cost(400, {"max_tokens": 50}) == 150
    assert estimated_cost(400, {"max_completion_tokens": 10, "n": 3}) == 130
    assert estimated_cost(0, None) == 16
    assert estimated_cost(3, {"max_tokens": "lots", "n": True}) == 17


def test_waits_for_one_cooldown_are_spread_within_the_bound() -> None:
    # Twenty requests waiting for the same cooled-down deployment: with jitter they wake
    # at distinct instants, none before the cooldown ends, none past the bound.
    a = member("a")
    a.state.cool_down(NOW, 2.0)
    rng = random.Random(7)
    waits = []
    for _ in range(20):
        result = plan([a], now=NOW, deadline=NOW + 30, cost=1,
                      strategy=strategy_named("weighted"), rng=rng)
        assert isinstance(result, WaitFor)
        waits.append(result.seconds)
    assert len(set(waits)) == 20
    assert all(2.0 <= w <= 2.0 + jitter_bound(2.0) for w in waits)
    assert jitter_bound(2.0) == pytest.approx(0.5)
    assert max(waits) - min(waits) > jitter_bound(2.0) / 2  # spread, not bunched


def test_jitter_never_takes_a_wait_past_the_budget() -> None:
    a = member("a")
    a.state.cool_down(NOW, 0.9)
    rng = random.Random(3)
    for _ in range(20):
        result = plan([a], now=NOW, deadline=NOW + 0.92, cost=1,
                      strategy=strategy_named("weighted"), rng=rng)
        assert isinstance(result, WaitFor) and 0.9 <= result.seconds <= 0.92
    assert jitter_bound(100.0) == 2.0 and jitter_bound(0.0) == 0.05
