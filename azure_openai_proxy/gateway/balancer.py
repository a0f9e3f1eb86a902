"""The thin adapter between the pure failover policy (`azure_openai_proxy.balancing`)
and the request pipeline: it supplies the clock, the random source and the metrics,
and turns the policy's "give up" into the error the client gets.

Per request the pipeline does:

    run = balancer.failover(pool, cost)
    while True:
        step = run.next_step(record)  # a deployment, seconds to wait, or raises
        lease = run.begin(deployment, record)
        ... lease.failed(reason, own) | lease.answered(status, headers) ...; lease.done()
        run.failed(error)             # when the attempt is worth retrying elsewhere
        run.moved_on(record, deployment, why, error)  # the same, noted in the record
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from azure_openai_proxy.auth import ANONYMOUS, Caller, caller_id
from azure_openai_proxy.balancing import (
    BreakerRules,
    DeploymentState,
    FailoverRun,
    GiveUp,
    Member,
    PoolState,
    Strategy,
    WaitFor,
    remaining_quota,
    retry_after_seconds,
    strategy_named,
)
from azure_openai_proxy.errors import (
    GatewayError,
    NoDeploymentAvailable,
    RateLimited,
    UpstreamError,
    UpstreamHttpError,
)
from azure_openai_proxy.observability.metrics import Metrics, NoMetrics
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool
from azure_openai_proxy.settings import DeploymentSettings, Settings

__all__ = ["Balancer", "Failover", "Lease", "failure_reason", "rules_of"]

_FAILED_STATUSES = frozenset({500, 502, 503, 504})
# Azure's "The server had an error while processing your request" is often the request's
# own doing (its shape, its size): it opens the deployment's circuit only when callers'
# failures mix (`balancing/circuit.py`); a 502/503/504 counts for everyone.
_OWN_STATUS = 500
_OWN_PROBE = 2  # (a `Lease._probe` bit)
# A retry's wait announced while every circuit in the way has its probe out (`_give_up`).
_PROBE_WAIT_SECONDS = 1.0


def rules_of(settings: Settings) -> BreakerRules:
    return BreakerRules(settings.circuit_failures, settings.circuit_open_seconds)


def failure_reason(error: GatewayError) -> str:
    """A short label for why an attempt failed: "429", "503", "timeout", "unreachable"."""
    if isinstance(error, UpstreamHttpError):
        return str(error.http_status)
    if isinstance(error, UpstreamError) and error.code:
        return error.code.removeprefix("upstream_")
    return str(error.http_status)


class Lease:
    """One attempt on one deployment; tells the deployment's state how it went."""

    __slots__ = ("_balancer", "_caller", "_open", "_probe", "_sent", "deployment", "state")

    def __init__(self, balancer: Balancer, deployment: DeploymentSettings, state: DeploymentState,
                 now: float | None = None, caller: Caller | None = None):
        self._balancer = balancer
        self.deployment = deployment
        self.state = state
        self._caller = caller
        if now is None:
            now = balancer.clock()
        self._sent = now
        self._open = True
        state.in_flight += 1
        # Which verdicts this attempt owes: 1, the deployment's half-open probe;
        # _OWN_PROBE, the probe of the caller's own circuit (looked for only when one exists).
        # (A closed breaker admits every attempt: not asked, a call saved per request.)
        breaker = state.breaker
        self._probe: int = breaker.state != "closed" and breaker.admit(now)
        if state.callers and state.callers.admit(caller_id(caller), now):
            self._probe |= _OWN_PROBE

    def failed(self, reason: str, own: bool = False) -> None:
        """No answer: connect error, timeout, connection dropped before the headers.
        `own`: it may be the request's own doing (a timeout after it was sent)."""
        self._failed(self._balancer.clock(), own)

    def _failed(self, now: float, own: bool) -> None:
        state, caller = self.state, caller_id(self._caller)
        owed, self._probe = self._probe, 0
        breaker = state.breaker
        if own and state.callers.full_without(caller):
            own = False  # (`CallerCircuits.full_without`)
        # While half-open only the probe's answer is the verdict: a request sent before
        # the circuit opened that fails now neither reopens it nor lets a second probe out.
        if (breaker.state != "half-open" or owed & 1) and breaker.failed(now, caller, own):
            self._balancer.metrics.circuit_opened(self.deployment.deployment_name,
                                                  self.deployment.endpoint)
        if own:
            if state.callers.failed(caller, now, breaker.threshold, breaker.open_seconds,
                                    bool(owed & _OWN_PROBE)):
                breaker.forget(caller)
        elif owed & _OWN_PROBE:
            state.callers.abandoned(caller)  # no verdict on the caller's requests

    def answered(self, status: int, headers: Mapping[str, str]) -> None:
        balancer, state = self._balancer, self.state
        now = balancer.clock()
        requests, tokens = remaining_quota(headers)
        if requests is not None or tokens is not None:
            state.observe_quota(now, requests, tokens)
        if status == 429 or (status == 503 and "retry-after" in headers):
            wait = retry_after_seconds(headers)
            if state.cool_down(now, balancer.cooldown_seconds if wait is None else wait):
                balancer.metrics.cooled_down(self.deployment.deployment_name, self.deployment.endpoint)
        if status in _FAILED_STATUSES:
            self._failed(now, status == _OWN_STATUS)
            return
        # Any other answer, a 429 or a 400 included, shows the deployment is up
        # (a closed breaker without failures has nothing to undo: no call).
        breaker = state.breaker
        if breaker.failures or breaker.state != "closed":
            breaker.succeeded()
        if state.callers:
            # Only a success shows the caller's requests work: a 400 or a 429 to its
            # probe says nothing of them (a cheap bad request must not reset its circuit),
            # so the next of its requests probes.
            if status < 400:
                state.callers.succeeded(caller_id(self._caller))
            elif self._probe & _OWN_PROBE:
                state.callers.abandoned(caller_id(self._caller))
        self._probe = 0
        if status < 400:
            state.observe_latency((now - self._sent) * 1000, balancer.rules.latency_alpha)

    def done(self) -> None:
        if not self._open:
            return
        self._open = False
        self.state.in_flight -= 1
        if self._probe:
            self._abandoned()

    def _abandoned(self) -> None:
        """The attempt ended without a verdict (the client left): let another probe go."""
        if self._probe & 1:
            self.state.breaker.abandoned()
        if self._probe & _OWN_PROBE:
            self.state.callers.abandoned(caller_id(self._caller))
        self._probe = 0


class Failover:
    """One request's attempts on its pool."""

    __slots__ = ("_balancer", "_caller", "_failed_at", "_last_error", "_next", "_pool", "_run")

    def __init__(self, balancer: Balancer, pool: Pool, run: FailoverRun,
                 caller: Caller | None = None) -> None:
        self._balancer = balancer
        self._pool = pool
        self._run = run
        self._caller = caller
        self._last_error: GatewayError | None = None
        self._next: Member | None = None  # the deployment next_step() just chose
        self._failed_at: Member | None = None  # where `_last_error` came from (when chosen)

    def next_step(self, record: RequestRecord | None = None) -> DeploymentSettings | float:
        """The deployment to try next, or seconds to wait first (noted in `record`'s
        retries); raises when giving up."""
        balancer = self._balancer
        step = self._run.next_step(balancer.clock())
        if isinstance(step, WaitFor):
            if record is not None:
                record.retries.append(f"wait:{round(step.seconds * 1000)}ms")
            return step.seconds
        if isinstance(step, GiveUp):
            raise self._give_up(step)
        if step.retry_of is not None:
            balancer.metrics.retried(step.retry_of, step.failover)
        self._next = step.member
        return step.member.settings

    def begin(self, deployment: DeploymentSettings,
              record: RequestRecord | None = None) -> Lease:
        """An attempt on `deployment` starts (one more of `record`'s attempts, on it)."""
        if record is not None:
            record.attempts += 1
            record.deployment = deployment.deployment_name
            record.endpoint = deployment.endpoint
        chosen = self._next
        # The state next_step() chose it with, without looking it up again.
        state = chosen.state if chosen is not None and chosen.settings is deployment else (
            self._balancer.state.of(deployment)
        )
        return Lease(self._balancer, deployment, state, caller=self._caller)

    def failed(self, error: GatewayError) -> None:
        """The attempt failed in a way another attempt may fix (429, 5xx, no answer)."""
        self._last_error, self._failed_at = error, self._next
        self._run.failed(failure_reason(error), rate_limited=error.http_status == 429)

    def moved_on(self, record: RequestRecord, deployment: DeploymentSettings,
                 why: object, error: GatewayError) -> None:
        """The attempt on `deployment` failed in a way another may fix: noted in the
        record's retries (`deployment:why`), and the run goes on (`failed`). Without its
        traceback: the run outlives the attempt's frame, and a traceback pointing back at
        it would keep its locals (a request body) alive in a reference cycle until a
        full collection."""
        record.retries.append(f"{deployment.deployment_name}:{why}")
        self.failed(error.with_traceback(None))

    def passed_over(self, record: RequestRecord, deployment: DeploymentSettings,
                    why: object, error: GatewayError) -> None:
        """An attempt never sent (`deployment` cannot take the request): noted in the
        record's retries, no upstream attempt (`max_attempts` counts those: a pass-over
        took one from the members that can serve it) and no failure a retry follows
        (`retries_total`); its error is the one given up with only when no attempt
        before it had one."""
        record.retries.append(f"{deployment.deployment_name}:{why}")
        record.attempts -= 1
        self._run.passed()
        if self._last_error is None:
            # (A later member refusing too keeps this refusal, and the record its name.)
            self._last_error, self._failed_at = error.with_traceback(None), self._next
        elif self._failed_at is not None:
            # The record names the deployment whose error the client may get (the access
            # line, the metrics' label, the ledger): not this one, which was never asked.
            failed = self._failed_at.settings
            record.deployment, record.endpoint = failed.deployment_name, failed.endpoint

    def _give_up(self, step: GiveUp) -> GatewayError:
        last = self._last_error
        wait = step.retry_after
        if wait is None and step.cause in ("held", "unavailable"):
            # Every circuit in the way is half-open with its probe out: its answer comes
            # in about a request's time, and closes the circuit or opens it again (a
            # retry then told the open circuit's own wait). The openai SDK retries a 503
            # anyway, and sleeps the retry-after when there is one (up to 60 s, or 120 s
            # in newer releases): `circuit_open_seconds` (30 s) held every retry that
            # long, a minute over its two, when the probe was back in one.
            wait = min(self._balancer.rules.open_seconds, _PROBE_WAIT_SECONDS)
        wait_ms = None if wait is None else max(1, math.ceil(wait * 1000))
        if last is not None and last.http_status == 429 and wait_ms is not None:
            # Azure's own 429 body, with the soonest any deployment of the pool is free.
            return _with_retry_after(last, wait_ms)
        if step.cause in ("exhausted", "tried_all") and last is not None:
            return last
        model = self._pool.model or "this request"
        if step.cause == "rate_limited":
            return RateLimited(
                f"Every deployment serving {model} is rate-limited; retry after "
                f"{_seconds(wait_ms)} seconds.", retry_after_ms=wait_ms,
            )
        if step.cause == "held":
            # Requests without a key are all one caller: there are no "others" to name.
            whose = ("requests without a key are paused" if caller_id(self._caller) == ANONYMOUS
                     else "yours are paused (other callers' are served)")
            return NoDeploymentAvailable(
                f"Recent requests for {model} failed again and again (Azure answered 500, "
                f"or not in time), so {whose}; retry after {_seconds(wait_ms)} seconds.",
                retry_after_ms=wait_ms,
            )
        return NoDeploymentAvailable(
            f"No deployment serving {model} is available right now (failing or cooling "
            "down); please retry later.", retry_after_ms=wait_ms,
        )


def _seconds(ms: int | None) -> int:
    return 1 if ms is None else max(1, -(-ms // 1000))


def _with_retry_after(error: GatewayError, ms: int) -> GatewayError:
    headers = {**error.headers(), "retry-after": str(_seconds(ms)), "retry-after-ms": str(ms)}
    if isinstance(error, UpstreamHttpError):
        return UpstreamHttpError(error.http_status, error.body(), headers)
    return RateLimited(error.message, retry_after_ms=ms)


class Balancer:
    """Per-worker: the pool state, the routing strategy and the attempt limits."""

    def __init__(
        self,
        settings: Settings,
        state: PoolState | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.rules = rules_of(settings)
        self.state = state or PoolState.for_deployments(settings.deployments, self.rules)
        self.metrics: Metrics = metrics or NoMetrics()
        self.clock = clock
        self.cooldown_seconds = settings.cooldown_seconds
        self._strategy: Strategy = strategy_named(settings.routing_strategy,
                                                  settings.latency_exploration)
        self.rng = rng or random.Random()
        self._max_attempts = settings.max_attempts
        self._budget = settings.retry_budget_seconds
        self._members: dict[int, tuple[Pool, tuple[Member, ...]]] = {}

    def failover(self, pool: Pool, cost: int, started: float | None = None,
                 tried: Member | None = None, caller: Caller | None = None) -> Failover:
        """A request's walk through `pool` (its retry budget counted from `started`,
        else now); `tried`: the request's first attempt was made on it without a run
        (`sole_ready`, `lease`), and failed. `caller`: whose request (its own circuits,
        `balancing/callers.py`, keep it off some deployments)."""
        members = self._members_of(pool)
        run = FailoverRun(  # positional
            members, (self.clock() if started is None else started) + self._budget,
            self._max_attempts, cost, self._strategy, self.rng,
        )
        for member in members:
            if member.state.callers:
                run.caller = caller_id(caller)  # made only when some caller's circuit exists
                break
        if tried is not None:
            run.attempts = 1
            run.last_key = tried.state.key
        return Failover(self, pool, run, caller)

    def sole_ready(self, pool: Pool, now: float, caller: Caller | None = None) -> Member | None:
        """The pool's deployment when it has one and it is up at `now` for `caller`:
        what a run's first step would choose (near its quota or not, it is the only
        candidate), so the request's first attempt needs no run; one is made
        (`failover(..., tried=)`) only when a second attempt may be needed."""
        members = self._members_of(pool)
        if len(members) == 1:
            member = members[0]
            state = member.state
            # (No caller's circuit here, nearly always: no caller id is made.)
            if state.available(now) and not (
                state.callers and state.callers.blocks(caller_id(caller), now)
            ):
                return member
        return None

    def lease(self, member: Member, record: RequestRecord, now: float,
              caller: Caller | None = None) -> Lease:
        """The first attempt on `sole_ready`'s member, noted in `record` as
        `Failover.begin` notes one."""
        deployment = member.settings
        record.attempts += 1
        record.deployment = deployment.deployment_name
        record.endpoint = deployment.endpoint
        return Lease(self, deployment, member.state, now, caller)

    def _members_of(self, pool: Pool) -> tuple[Member, ...]:
        cached = self._members.get(id(pool))
        if cached is not None and cached[0] is pool:
            return cached[1]
        members = tuple(Member(d, self.state.of(d)) for d in pool.deployments)
        if not (pool.dynamic or pool.transient):
            self._members[id(pool)] = (pool, members)
        return members

    def snapshot(self, deployments: tuple[DeploymentSettings, ...]) -> list[dict[str, Any]]:
        """Each configured deployment's live state, for `/health/deployments` (no keys)."""
        now = self.clock()
        rows = []
        for d in deployments:
            state = self.state.of(d)
            rows.append({
                "model": d.model_name, "deployment": d.deployment_name,
                "endpoint": d.endpoint, "priority": d.priority, "weight": d.weight,
                "available": state.available(now), **state.snapshot(now),
            })
        return rows
