"""How to order the ready deployments of one priority group. Pure; randomness passed in.

- `weighted` (default): a weighted random draw without replacement, so over many requests
  each deployment gets its share of first attempts in proportion to its `weight`.
- `least-busy`: fewest requests in flight per unit of weight first; ties broken at random.
- `latency`: lowest recent latency (EWMA of time to response headers) first. A deployment
  not yet measured counts as fastest, so it gets measured; and with probability
  `exploration` a random deployment goes first, so a slow one that recovered is noticed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from azure_openai_proxy.balancing.state import DeploymentState
from azure_openai_proxy.settings import DeploymentSettings

__all__ = ["STRATEGIES", "Member", "Strategy", "strategy_named"]


@dataclass(frozen=True, slots=True)
class Member:
    """A deployment of a pool with its live state."""

    settings: DeploymentSettings
    state: DeploymentState


class Strategy(Protocol):
    def order(self, group: Sequence[Member], rng: random.Random) -> list[Member]: ...


class WeightedRandom:
    def order(self, group: Sequence[Member], rng: random.Random) -> list[Member]:
        remaining = list(group)
        ordered: list[Member] = []
        while len(remaining) > 1:
            total = sum(m.settings.weight for m in remaining)
            point = rng.random() * total
            index = 0
            for index, member in enumerate(remaining):  # noqa: B007
                point -= member.settings.weight
                if point < 0:
                    break
            ordered.append(remaining.pop(index))
        return ordered + remaining


class LeastBusy:
    def order(self, group: Sequence[Member], rng: random.Random) -> list[Member]:
        keyed = [(m.state.in_flight / m.settings.weight, rng.random(), i) for i, m in enumerate(group)]
        return [group[i] for _, _, i in sorted(keyed)]


class LowestLatency:
    def __init__(self, exploration: float = 0.1) -> None:
        self.exploration = exploration

    def order(self, group: Sequence[Member], rng: random.Random) -> list[Member]:
        keyed = [(m.state.latency_ms or 0.0, rng.random(), i) for i, m in enumerate(group)]
        ordered = [group[i] for _, _, i in sorted(keyed)]
        if len(ordered) > 1 and rng.random() < self.exploration:
            ordered.insert(0, ordered.pop(rng.randrange(1, len(ordered))))
        return ordered


STRATEGIES: dict[str, Callable[[float], Strategy]] = {
    "weighted": lambda _exploration: WeightedRandom(),
    "least-busy": lambda _exploration: LeastBusy(),
    "latency": LowestLatency,
}


def strategy_named(name: str, exploration: float = 0.1) -> Strategy:
    """The strategy `routing_strategy` names (validated by the settings)."""
    return STRATEGIES[name](exploration)
