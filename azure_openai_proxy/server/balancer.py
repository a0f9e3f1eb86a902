"""Which deployment of a pool to try, in what order, and whether to try another.

This first version orders a pool by priority and then by weight (a seeded random
draw, so tests can pin it), and allows up to `max_attempts` tries. Live state
(cooldowns after 429, circuit breakers, in-flight counts) plugs in behind the same
methods.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from azure_openai_proxy.errors import GatewayError
from azure_openai_proxy.routing import Pool
from azure_openai_proxy.settings import DeploymentSettings

__all__ = ["Balancer", "Lease"]


class Lease:
    """One attempt on one deployment; tells the balancer how it went."""

    __slots__ = ("deployment",)

    def __init__(self, deployment: DeploymentSettings) -> None:
        self.deployment = deployment

    def failed(self, reason: str) -> None:
        pass

    def answered(self, status: int, headers: Mapping[str, str]) -> None:
        pass

    def done(self) -> None:
        pass


def weighted_order(
    deployments: Sequence[DeploymentSettings], rng: random.Random
) -> list[DeploymentSettings]:
    """Priority groups in order; inside a group, a weighted draw without replacement."""
    ordered: list[DeploymentSettings] = []
    for priority in sorted({d.priority for d in deployments}):
        group = [d for d in deployments if d.priority == priority]
        while group:
            pick = rng.choices(range(len(group)), weights=[d.weight for d in group])[0]
            ordered.append(group.pop(pick))
    return ordered


class Balancer:
    def __init__(self, max_attempts: int, rng: random.Random | None = None) -> None:
        self._max_attempts = max_attempts
        self._rng = rng or random.Random()

    def candidates(self, pool: Pool) -> list[DeploymentSettings]:
        if len(pool.deployments) == 1:
            return list(pool.deployments)
        return weighted_order(pool.deployments, self._rng)

    def begin(self, deployment: DeploymentSettings) -> Lease:
        return Lease(deployment)

    async def may_retry(
        self, attempt: int, candidates: Sequence[DeploymentSettings], error: GatewayError
    ) -> bool:
        return attempt < min(len(candidates), self._max_attempts)

    def exhausted(self, last_error: GatewayError) -> GatewayError:
        return last_error
