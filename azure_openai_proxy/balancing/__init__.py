"""Choosing deployments: live state per deployment and the failover policy over it.

Pure: no sockets, no clock, no randomness that is not passed in. The server's
`Balancer` adapts this to the request pipeline.
"""

from __future__ import annotations

from azure_openai_proxy.balancing.circuit import CircuitBreaker, CircuitState
from azure_openai_proxy.balancing.cost import estimated_cost
from azure_openai_proxy.balancing.headers import remaining_quota, retry_after_seconds
from azure_openai_proxy.balancing.planner import (
    FailoverRun,
    GiveUp,
    Ordered,
    Plan,
    Try,
    WaitFor,
    near_quota,
    plan,
)
from azure_openai_proxy.balancing.state import (
    BreakerRules,
    DeploymentKey,
    DeploymentState,
    PoolState,
    key_of,
)
from azure_openai_proxy.balancing.strategies import STRATEGIES, Member, Strategy, strategy_named

__all__ = [
    "STRATEGIES",
    "BreakerRules",
    "CircuitBreaker",
    "CircuitState",
    "DeploymentKey",
    "DeploymentState",
    "FailoverRun",
    "GiveUp",
    "Member",
    "Ordered",
    "Plan",
    "PoolState",
    "Strategy",
    "Try",
    "WaitFor",
    "estimated_cost",
    "key_of",
    "near_quota",
    "plan",
    "remaining_quota",
    "retry_after_seconds",
    "strategy_named",
]
