"""The failover policy: given a pool's live state and the time, what to do next. Pure.

`plan()` answers one of:

- `Ordered(candidates)`: the deployments to try, best first. Priority groups in order
  (priority 2 only after every priority-1 deployment), each ordered by the strategy;
  deployments near their quota (the last `x-ratelimit-remaining-*` reading, refilled
  by the configured tpm/rpm, leaves less than this request's estimated cost) go after
  all the others, so they are avoided before they answer 429.
- `WaitFor(seconds)`: nothing is ready, but a deployment that is only cooling down after
  a 429 will be ready in time for the request's budget. The wait ends at the cooldown's
  end plus a random jitter (`jitter_bound`), so the requests waiting for one deployment
  do not all wake, and hit it, at the same instant.
- `GiveUp(cause, retry_after)`: nothing is ready in time. `rate_limited` when every
  blocked deployment is cooling down (the client gets 429), `unavailable` when circuits
  are open (503), `held` when only the caller's own circuits keep it off
  (`balancing/callers.py`; a 503 that says so), `tried_all` when every deployment
  already failed for this request.

`FailoverRun` walks one request through its pool with these answers, counting attempts
against `max_attempts` and time against the retry budget.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from azure_openai_proxy.balancing.state import DeploymentKey, DeploymentState, soonest
from azure_openai_proxy.balancing.strategies import Member, Strategy

__all__ = [
    "FailoverRun", "GiveUp", "Ordered", "Plan", "Try", "WaitFor", "jitter_bound", "near_quota", "plan",
]

Cause = Literal["rate_limited", "unavailable", "held", "tried_all", "exhausted"]

# Jitter added to a wait for a cooldown: a quarter of the wait, at least 50 ms (a short
# retry-after still spreads its waiters) and at most 2 s (a long one is not stretched
# much), never past the request's budget.
_JITTER_SHARE = 0.25
_JITTER_FLOOR = 0.05
_JITTER_CAP = 2.0


# NamedTuples rather than frozen dataclasses: one is made per request.
class Ordered(NamedTuple):
    candidates: tuple[Member, ...]


class WaitFor(NamedTuple):
    seconds: float


class GiveUp(NamedTuple):
    cause: Cause
    retry_after: float | None  # seconds until the soonest deployment is ready again


Plan = Ordered | WaitFor | GiveUp


def near_quota(member: Member, now: float, cost: int) -> bool:
    """Whether the deployment's last quota reading leaves too little for this request.

    Requests already in flight there are assumed to cost as much as this one."""
    state, settings = member.state, member.settings
    requests = state.requests_left(now, settings.rpm)
    if requests is not None and requests - state.in_flight < 1:
        return True
    tokens = state.tokens_left(now, settings.tpm)
    return tokens is not None and tokens - state.in_flight * cost < cost


def jitter_bound(wait: float, room: float = math.inf) -> float:
    """The most jitter added to a `wait` for a cooldown, with `room` seconds left in the
    request's budget after it."""
    return max(0.0, min(_JITTER_CAP, max(_JITTER_FLOOR, wait * _JITTER_SHARE), room))


def _by_priority(members: list[Member], strategy: Strategy, rng: random.Random) -> list[Member]:
    if len(members) < 2:
        return members
    priorities = sorted({m.settings.priority for m in members})
    ordered: list[Member] = []
    for priority in priorities:
        ordered.extend(strategy.order([m for m in members if m.settings.priority == priority], rng))
    return ordered


def plan(
    members: Sequence[Member], *, now: float, deadline: float, cost: int,
    strategy: Strategy, rng: random.Random, excluded: Iterable[DeploymentKey] = (),
    caller: str | None = None,
) -> Plan:
    """What to do next for a request of `caller` (None: no caller's own circuit counts)."""
    skip = set(excluded)
    roomy: list[Member] = []
    tight: list[Member] = []
    blocked: list[DeploymentState] = []
    held: list[float] = []  # when the deployments `caller`'s own circuits keep it off open
    for member in members:
        state = member.state
        if state.key in skip:
            continue
        if not state.available(now):
            blocked.append(state)
        elif caller is not None and state.callers and state.callers.blocks(caller, now):
            held.append(state.callers.available_at(caller))
        elif near_quota(member, now, cost):
            tight.append(member)
        else:
            roomy.append(member)
    if roomy or tight:
        return Ordered(tuple(_by_priority(roomy, strategy, rng) + _by_priority(tight, strategy, rng)))
    if not blocked and not held:
        return GiveUp("tried_all", None)
    # Only a cooldown (a 429's retry-after) is worth waiting for: a deployment whose
    # circuit is open is down, and waiting for it would only delay the answer.
    cooling = [s for s in blocked if s.breaker.state == "closed"]
    wait = soonest(cooling, now)
    if wait is not None and now + wait <= deadline:
        return WaitFor(wait + rng.random() * jitter_bound(wait, deadline - now - wait))
    cause: Cause = (
        "held" if not blocked else "rate_limited" if len(cooling) == len(blocked) and not held
        else "unavailable"
    )
    return GiveUp(cause, _soonest_of(soonest(blocked, now), held, now))


def _soonest_of(first: float | None, held: list[float], now: float) -> float | None:
    times = [t - now for t in held if not math.isinf(t)]
    if first is not None:
        times.append(first)
    return max(0.0, min(times)) if times else None


@dataclass(slots=True)
class Try:
    member: Member
    retry_of: str | None = None  # why the previous attempt failed, when this is a retry
    failover: bool = False  # a different deployment from the previous attempt


@dataclass(slots=True)
class FailoverRun:
    """One client request's walk through its pool."""

    members: Sequence[Member]
    deadline: float
    max_attempts: int
    cost: int
    strategy: Strategy
    rng: random.Random
    attempts: int = 0
    excluded: set[DeploymentKey] = field(default_factory=set)
    last_failure: str | None = None
    last_key: DeploymentKey | None = None
    caller: str | None = None  # whose request: its own circuits count (`callers.py`)

    def next_step(self, now: float) -> Try | WaitFor | GiveUp:
        if not self.attempts and len(self.members) == 1 and self.members[0].state.open_to(
            self.caller, now
        ):
            # The common first step, a one-deployment pool that is up: what plan() would
            # answer (near its quota or not, it is the only candidate), without the lists.
            member = self.members[0]
            self.attempts = 1
            self.last_key = member.state.key
            return Try(member)
        if self.attempts >= self.max_attempts or (self.attempts and now >= self.deadline):
            return GiveUp("exhausted", soonest((m.state for m in self.members), now))
        step = plan(self.members, now=now, deadline=self.deadline, cost=self.cost,
                    strategy=self.strategy, rng=self.rng, excluded=self.excluded,
                    caller=self.caller)
        if not isinstance(step, Ordered):
            return step
        member = step.candidates[0]
        self.attempts += 1
        attempt = Try(member)
        if self.last_failure is not None:
            attempt.retry_of = self.last_failure
            attempt.failover = member.state.key != self.last_key
        self.last_key = member.state.key
        return attempt

    def passed(self) -> None:
        """The attempt just chosen was not made: its deployment cannot take the request
        (nothing was sent). Not counted against `max_attempts` nor a failure to retry
        after; that deployment is not chosen again."""
        self.attempts -= 1
        if self.last_key is not None:
            self.excluded.add(self.last_key)

    def failed(self, reason: str, *, rate_limited: bool = False) -> None:
        """The attempt just made failed. A deployment that answered 429 may be tried
        again after its cooldown; one that failed otherwise is not tried again."""
        self.last_failure = reason
        if not rate_limited and self.last_key is not None:
            self.excluded.add(self.last_key)
