"""Live state per deployment, and the registry that keeps it across config reloads. Pure.

A deployment is known by its `DeploymentKey` (endpoint and deployment name), not by its
settings object, so a reload that keeps a deployment keeps its cooldown, circuit and
in-flight count; a request still running on the old routing updates the same object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from azure_openai_proxy.balancing.callers import ANONYMOUS, CallerCircuits
from azure_openai_proxy.balancing.circuit import CircuitBreaker
from azure_openai_proxy.settings import DeploymentSettings

__all__ = ["BreakerRules", "DeploymentKey", "DeploymentState", "PoolState", "key_of"]

# How long a `x-ratelimit-remaining-*` reading says anything: Azure's token window is a
# minute, its request window ten seconds.
TOKEN_WINDOW = 60.0
REQUEST_WINDOW = 10.0
_MAX_DYNAMIC = 1000  # default-endpoint deployments are named by clients: keep a bounded set


@dataclass(frozen=True, slots=True)
class DeploymentKey:
    endpoint: str
    deployment: str

    @property
    def host(self) -> str:
        """The endpoint without scheme and path, for labels and health output."""
        return self.endpoint.partition("://")[2].partition("/")[0]


def key_of(deployment: DeploymentSettings) -> DeploymentKey:
    return DeploymentKey(deployment.endpoint, deployment.deployment_name)


@dataclass(frozen=True, slots=True)
class BreakerRules:
    failure_threshold: int = 5
    open_seconds: float = 30.0
    latency_alpha: float = 0.3


@dataclass(slots=True)
class _Reading:
    remaining: int
    seen_at: float


@dataclass(slots=True)
class DeploymentState:
    """What the gateway has learnt about one deployment from its recent answers."""

    key: DeploymentKey
    breaker: CircuitBreaker
    in_flight: int = 0
    latency_ms: float | None = None  # EWMA of time to response headers
    cooldown_until: float = 0.0
    requests: _Reading | None = None
    tokens: _Reading | None = None
    # Callers whose own failures opened a circuit of theirs here (empty when healthy).
    callers: CallerCircuits = field(default_factory=CallerCircuits)

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until

    def available(self, now: float) -> bool:
        # (A closed breaker, nearly always, is asked nothing: a call saved per request.)
        breaker = self.breaker
        return now >= self.cooldown_until and (breaker.state == "closed" or breaker.available(now))

    def available_at(self) -> float:
        return max(self.cooldown_until, self.breaker.available_at())

    def open_to(self, caller: str | None, now: float) -> bool:
        """`available`, and `caller`'s own circuit here (if any) lets it through."""
        return self.available(now) and not (
            caller is not None and self.callers and self.callers.blocks(caller, now)
        )

    def cool_down(self, now: float, seconds: float) -> bool:
        """Cool down for `seconds`; a shorter answer never shortens a longer cooldown.
        True when the cooldown was extended."""
        until = now + seconds
        if until <= self.cooldown_until:
            return False
        self.cooldown_until = until
        return True

    def observe_latency(self, ms: float, alpha: float) -> None:
        self.latency_ms = ms if self.latency_ms is None else alpha * ms + (1 - alpha) * self.latency_ms

    def observe_quota(self, now: float, requests: int | None, tokens: int | None) -> None:
        if requests is not None:
            self.requests = _Reading(requests, now)
        if tokens is not None:
            self.tokens = _Reading(tokens, now)

    def tokens_left(self, now: float, tpm: int | None) -> float | None:
        """Tokens the deployment likely has now; None when nothing recent is known."""
        return _left(self.tokens, now, TOKEN_WINDOW, tpm)

    def requests_left(self, now: float, rpm: int | None) -> float | None:
        return _left(self.requests, now, REQUEST_WINDOW, rpm)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Plain data for `/health/deployments` and the metrics collector."""
        breaker = self.breaker
        return {
            "in_flight": self.in_flight,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "cooldown_seconds": round(max(0.0, self.cooldown_until - now), 3),
            "circuit": breaker.state,
            "consecutive_failures": breaker.failures,
            # Callers kept off by their own failures; the deployment serves the others.
            "callers_circuit_open": self.callers.open_count(now) if self.callers else 0,
            # With no keys at all every request is that one caller: its circuit is the
            # deployment's for all of them, whatever "circuit" says.
            "circuit_without_key": self.callers.state_of(ANONYMOUS),
            "circuit_reopens_in": (
                round(max(0.0, breaker.opened_until - now), 3) if breaker.state == "open" else None
            ),
            "remaining_requests": None if self.requests is None else self.requests.remaining,
            "remaining_tokens": None if self.tokens is None else self.tokens.remaining,
            "quota_seen_seconds_ago": _age(self.tokens or self.requests, now),
        }


def _left(reading: _Reading | None, now: float, window: float, per_minute: int | None) -> float | None:
    if reading is None:
        return None
    age = now - reading.seen_at
    if age >= window:
        return None  # the window has rolled over since
    if per_minute is None:
        return float(reading.remaining)
    return min(float(per_minute), reading.remaining + per_minute * age / 60.0)


def _age(reading: _Reading | None, now: float) -> float | None:
    return None if reading is None else round(now - reading.seen_at, 3)


@dataclass(slots=True)
class PoolState:
    """Every deployment's `DeploymentState`, created on first use."""

    rules: BreakerRules = field(default_factory=BreakerRules)
    _states: dict[DeploymentKey, DeploymentState] = field(default_factory=dict)
    _configured: frozenset[DeploymentKey] = frozenset()

    @classmethod
    def for_deployments(
        cls, deployments: Iterable[DeploymentSettings], rules: BreakerRules,
        previous: PoolState | None = None,
    ) -> PoolState:
        """A registry for these deployments, keeping `previous`'s state for the ones
        that are still configured (same endpoint and deployment name)."""
        configured = frozenset(key_of(d) for d in deployments)
        pool = cls(rules, {}, configured)
        if previous is not None:
            for key, state in previous._states.items():
                if key in configured:
                    state.breaker.threshold = rules.failure_threshold
                    state.breaker.open_seconds = rules.open_seconds
                    for own in state.callers.values():
                        own.threshold, own.open_seconds = rules.failure_threshold, rules.open_seconds
                    pool._states[key] = state
        return pool

    def of(self, deployment: DeploymentSettings) -> DeploymentState:
        key = key_of(deployment)
        state = self._states.get(key)
        if state is None:
            state = self._new(key)
        return state

    def get(self, key: DeploymentKey) -> DeploymentState | None:
        return self._states.get(key)

    def _new(self, key: DeploymentKey) -> DeploymentState:
        if key not in self._configured:
            dynamic = [k for k in self._states if k not in self._configured]
            if len(dynamic) >= _MAX_DYNAMIC:
                # Forget the oldest idle one; a busy one keeps its in-flight count.
                for old in dynamic:
                    if self._states[old].in_flight == 0:
                        del self._states[old]
                        break
        rules = self.rules
        state = DeploymentState(key, CircuitBreaker(rules.failure_threshold, rules.open_seconds))
        self._states[key] = state
        return state

    def __iter__(self) -> Iterator[DeploymentState]:
        return iter(list(self._states.values()))

    def __len__(self) -> int:
        return len(self._states)

    def is_configured(self, key: DeploymentKey) -> bool:
        """False for a default-endpoint deployment named by a client's request."""
        return key in self._configured


def soonest(states: Iterable[DeploymentState], now: float) -> float | None:
    """Seconds until the first of `states` becomes available; None if none ever will."""
    times = [s.available_at() for s in states]
    finite = [t for t in times if not math.isinf(t)]
    return max(0.0, min(finite) - now) if finite else None
