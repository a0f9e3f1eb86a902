"""The values governance is made of: a virtual key, a team, a usage record.

Shared by the key directory and limits (who may call, how much) and the ledger (who spent
what), and by every store that keeps them. Frozen: a change is a new value written to the
store, which is what makes "revocation takes effect at once" a cache refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BudgetPeriod", "Limits", "Team", "UsageRecord", "VirtualKey"]

BudgetPeriod = Literal["daily", "weekly", "monthly", "none"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits a key or a team carries; None: no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "none"
    # Past this spend a warning is logged and an `x-aop-budget-warning` header sent; the
    # request is still served.
    soft_budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    limits: Limits = Limits()
    blocked: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """A client key the gateway issued. Only the secret's hash is kept (`secret_hash`,
    sha256 hex); `prefix` is its first characters, for people to tell keys apart."""

    id: str
    name: str
    secret_hash: str
    prefix: str
    team_id: str | None = None
    # Model names or shell-style patterns (`gpt-4o*`); empty: every model.
    models: tuple[str, ...] = ()
    limits: Limits = Limits()
    expires_at: float | None = None  # epoch seconds
    blocked: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    # After a rotation the old secret keeps working until `previous_valid_until`.
    previous_secret_hash: str | None = None
    previous_valid_until: float | None = None


@dataclass(slots=True)
class UsageRecord:
    """One line of the usage ledger: one request. Never a prompt or an answer."""

    time: float  # epoch seconds when the request arrived
    request_id: str
    key_id: str | None
    team_id: str | None
    model: str | None  # what the client asked for
    deployment: str | None
    endpoint: str | None
    route: str
    status: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    upstream_ms: float | None = None
    total_ms: float = 0.0
    stream: bool = False
    attempts: int = 0
    # "measured": Azure's usage; "estimated": counted by the gateway (a stream the client
    # left, or that broke, before Azure's usage frame); "none": nothing to count.
    usage_source: Literal["measured", "estimated", "none"] = "none"
    # False: no price for the model (governance/prices.py), so cost_usd is 0 by default.
    priced: bool = True
