"""Routing strategies: weighted shares within statistical bounds, least-busy, latency."""

from __future__ import annotations

import random
from collections import Counter

from azure_openai_proxy.balancing import Member, strategy_named
from azure_openai_proxy.balancing.circuit import CircuitBreaker
from azure_openai_proxy.balancing.state import DeploymentKey, DeploymentState
from azure_openai_proxy.settings import DeploymentSettings


def member(name: str, weight: float = 1.0, in_flight: int = 0, latency: float | None = None) -> Member:
    settings = DeploymentSettings(model_name="m", deployment_name=name, endpoint="https://e.example.com",
                                  api_key="k", weight=weight)
    state = DeploymentState(DeploymentKey("https://e.example.com", name), CircuitBreaker(3, 1.0),
                            in_flight=in_flight, latency_ms=latency)
    return Member(settings, state)


def test_weighted_first_picks_follow_the_weights() -> None:
    group = [member("a", 1), member("b", 2), member("c", 7)]
    strategy = strategy_named("weighted")
    rng = random.Random(1234)
    draws = 20_000
    firsts = Counter(strategy.order(group, rng)[0].settings.deployment_name for _ in range(draws))
    expected = {"a": 0.1 * draws, "b": 0.2 * draws, "c": 0.7 * draws}
    chi2 = sum((firsts[k] - e) ** 2 / e for k, e in expected.items())
    # 2 degrees of freedom: P(chi2 > 13.8) = 0.001.
    assert chi2 < 13.8, (firsts, chi2)


def test_weighted_order_is_a_permutation_and_second_place_is_weighted_too() -> None:
    group = [member("a", 1), member("b", 1), member("c", 8)]
    rng = random.Random(7)
    seconds = Counter()
    for _ in range(5000):
        order = [m.settings.deployment_name for m in strategy_named("weighted").order(group, rng)]
        assert sorted(order) == ["a", "b", "c"]
        if order[0] != "c":
            seconds[order[1]] += 1
    # When a or b goes first, c (weight 8 of the 9 left) is nearly always second.
    assert seconds["c"] > 0.8 * sum(seconds.values())


def test_least_busy_orders_by_in_flight_per_weight() -> None:
    group = [member("a", 1, in_flight=3), member("b", 1, in_flight=1), member("c", 4, in_flight=6)]
    order = strategy_named("least-busy").order(group, random.Random(0))
    assert [m.settings.deployment_name for m in order] == ["b", "c", "a"]


def test_least_busy_breaks_ties_at_random() -> None:
    group = [member("a"), member("b")]
    rng = random.Random(3)
    firsts = Counter(strategy_named("least-busy").order(group, rng)[0].settings.deployment_name
                     for _ in range(400))
    assert firsts["a"] > 100 and firsts["b"] > 100


def test_latency_prefers_the_fastest_and_unmeasured_and_explores() -> None:
    group = [member("slow", latency=900.0), member("fast", latency=100.0), member("new")]
    no_exploring = strategy_named("latency", 0.0)
    order = no_exploring.order(group, random.Random(0))
    assert [m.settings.deployment_name for m in order] == ["new", "fast", "slow"]

    measured = [member("slow", latency=900.0), member("fast", latency=100.0)]
    exploring = strategy_named("latency", 0.2)
    rng = random.Random(5)
    firsts = Counter(exploring.order(measured, rng)[0].settings.deployment_name for _ in range(5000))
    assert 800 < firsts["slow"] < 1200  # about 20%
