"""Per-key and per-team request limits: requests per minute, tokens per minute, and
requests in flight. Pure: the clock is injected, nothing here awaits or does I/O.

    limiter.admit([("key:k1", key_limits), ("team:t1", team_limits)], tokens)
        -> Admission (every subject passed; tokens reserved, one request in flight each)
        |  Refusal (nothing was taken from any subject)
    limiter.settle(admission, used_tokens)   # once, whatever happened to the request

RPM and TPM are token buckets holding a minute's worth (capacity = the limit, refilled
at limit/60 per second): a burst of the whole minute's allowance passes at once, then
requests pass at the refill rate. TPM is reserved before the request goes out (the
estimate of `estimate_tokens`) and settled with Azure's usage when it is known: the
difference is given back, or taken (a bucket may go below zero: the next requests wait).

State is per process: with `--workers N` each worker keeps its own buckets (README).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from azure_openai_proxy.governance.estimate import DEFAULT_COMPLETION_TOKENS, max_output_tokens
from azure_openai_proxy.governance.model import Limits

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "Admission",
    "RateLimiter",
    "Refusal",
    "estimate_tokens",
]

_PARALLEL_RETRY_SECONDS = 1.0

LimitKind = Literal["requests", "tokens", "parallel"]


def estimate_tokens(body: Mapping[str, Any] | None,
                    default_completion: int = DEFAULT_COMPLETION_TOKENS,
                    operation: str | None = None) -> int:
    """Tokens a request may cost: about a token per four characters of its text
    (`messages`, `input`, `prompt`, `instructions`), plus its most output tokens
    (governance/estimate.py `max_output_tokens`: its max, else `default_completion`
    when it generates text, times its `n`)."""
    if body is None:
        return 0
    chars = 0
    for name in ("messages", "input", "prompt", "instructions"):
        value = body.get(name)
        if value is not None:
            chars += _text_length(value, 0)
    return -(-chars // 4) + max_output_tokens(body, default_completion, operation)


def _text_length(value: Any, depth: int) -> int:
    """Characters of text in a message list, content parts or plain strings."""
    if isinstance(value, str):
        return len(value)
    if depth > 8:  # deeper structures are not prompt text
        return 0
    if isinstance(value, list):
        total = 0
        for item in value:
            # The common list, messages with string contents, without a call per item.
            if isinstance(item, dict) and depth < 8:
                for name in _TEXT_FIELDS:
                    part = item.get(name)
                    if isinstance(part, str):
                        total += len(part)
                    elif part is not None:
                        total += _text_length(part, depth + 2)
            else:
                total += _text_length(item, depth + 1)
        return total
    if isinstance(value, dict):
        total = 0
        for name in _TEXT_FIELDS:
            item = value.get(name)
            if item is not None:
                total += _text_length(item, depth + 1)
        return total
    return 0


_TEXT_FIELDS = ("content", "text", "input_text", "arguments")


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    stamp: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def resize(self, capacity: float) -> None:
        if capacity != self.capacity:
            self.level = min(self.level, capacity)
            self.capacity = capacity

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is in the bucket (now: 0)."""
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self.rate)

    def reset_after(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(slots=True)
class _Subject:
    requests: _Bucket | None = None
    tokens: _Bucket | None = None
    parallel: int | None = None
    in_flight: int = 0
    limits: Limits | None = None

    def configure(self, limits: Limits, now: float) -> None:
        if limits is self.limits:  # the same key as last time: only refill
            if self.requests is not None:
                self.requests.refill(now)
            if self.tokens is not None:
                self.tokens.refill(now)
            return
        self.limits = limits
        self.requests = _bucket(self.requests, limits.rpm, now)
        self.tokens = _bucket(self.tokens, limits.tpm, now)
        self.parallel = limits.max_parallel


def _bucket(bucket: _Bucket | None, limit: int | None, now: float) -> _Bucket | None:
    if limit is None or limit <= 0:
        return None
    if bucket is None:
        return _Bucket(float(limit), float(limit), now)
    bucket.refill(now)
    bucket.resize(float(limit))
    return bucket


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that must wait: which limit of which subject, for how long, and the
    `x-ratelimit-*` headers to answer with."""

    subject: str
    kind: LimitKind
    retry_after: float  # seconds
    headers: dict[str, str]
    never: bool = False  # the request alone is over the limit: waiting will not help


@dataclass(slots=True)
class Admission:
    """A request let through: what it holds until `RateLimiter.settle`."""

    subjects: tuple[_Subject, ...]
    reserved: int
    headers: dict[str, str]
    settled: bool = field(default=False)


class RateLimiter:
    """Every subject's buckets and in-flight count, in one worker."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._subjects: dict[str, _Subject] = {}

    def admit(self, subjects: Sequence[tuple[str, Limits]], tokens: int) -> Admission | Refusal:
        """Let a request costing `tokens` through every subject's limits, or refuse it
        without taking anything from any of them."""
        now = self._clock()
        states = []
        for name, limits in subjects:
            state = self._subjects.get(name)
            if state is None:
                state = self._subjects[name] = _Subject()
            state.configure(limits, now)
            states.append((name, state))
        for name, state in states:
            refusal = _check(name, state, tokens)
            if refusal is not None:
                return refusal
        for _, state in states:
            if state.requests is not None:
                state.requests.level -= 1
            if state.tokens is not None:
                state.tokens.level -= tokens
            state.in_flight += 1
        return Admission(tuple(s for _, s in states), tokens, _headers(s for _, s in states))

    def settle(self, admission: Admission, used_tokens: int | None) -> None:
        """The request ended (answered, failed, or its client left): its in-flight slot
        is freed and its token reservation replaced by `used_tokens` (None: unknown,
        the reservation is given back). Settling twice does nothing."""
        if admission.settled:
            return
        admission.settled = True
        now = self._clock()
        give_back = admission.reserved - (used_tokens if used_tokens is not None else 0)
        for state in admission.subjects:
            state.in_flight = max(0, state.in_flight - 1)
            bucket = state.tokens
            if bucket is not None and give_back:
                bucket.refill(now)
                bucket.level = max(-bucket.capacity, min(bucket.capacity, bucket.level + give_back))

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the state of subjects not in `keep` and with nothing in flight (keys and
        teams that were deleted)."""
        kept = set(keep)
        for name in [n for n, s in self._subjects.items() if n not in kept and not s.in_flight]:
            del self._subjects[name]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each subject's live state, for the admin API."""
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for name, state in self._subjects.items():
            entry: dict[str, Any] = {"in_flight": state.in_flight,
                                     "max_parallel": state.parallel}
            for kind, bucket in (("requests", state.requests), ("tokens", state.tokens)):
                if bucket is None:
                    entry[kind] = None
                    continue
                bucket.refill(now)
                entry[kind] = {"limit": int(bucket.capacity),
                               "remaining": max(0, math.floor(bucket.level)),
                               "reset_seconds": round(bucket.reset_after(), 3)}
            out[name] = entry
        return out


def _check(name: str, state: _Subject, tokens: int) -> Refusal | None:
    if state.parallel is not None and state.in_flight >= state.parallel:
        return Refusal(name, "parallel", _PARALLEL_RETRY_SECONDS, _headers((state,)))
    requests = state.requests
    if requests is not None and requests.level < 1:
        return Refusal(name, "requests", requests.wait_for(1), _headers((state,)))
    bucket = state.tokens
    if bucket is not None and tokens > bucket.level:
        if tokens > bucket.capacity:
            return Refusal(name, "tokens", 60.0, _headers((state,)), never=True)
        return Refusal(name, "tokens", bucket.wait_for(tokens), _headers((state,)))
    return None


_HEADER_NAMES = {kind: (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}",
                         f"x-ratelimit-reset-{kind}") for kind in ("requests", "tokens")}


def _headers(states: Iterable[_Subject]) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the tightest of `states`' buckets."""
    tight_requests: _Bucket | None = None
    tight_tokens: _Bucket | None = None
    for state in states:
        bucket = state.requests
        if bucket is not None and (tight_requests is None
                                   or bucket.level < tight_requests.level):
            tight_requests = bucket
        bucket = state.tokens
        if bucket is not None and (tight_tokens is None or bucket.level < tight_tokens.level):
            tight_tokens = bucket
    headers: dict[str, str] = {}
    for kind, bucket in (("requests", tight_requests), ("tokens", tight_tokens)):
        if bucket is not None:
            limit, remaining, reset = _HEADER_NAMES[kind]
            headers[limit] = str(int(bucket.capacity))
            headers[remaining] = str(max(0, math.floor(bucket.level)))
            headers[reset] = duration(bucket.reset_after())
    return headers


def duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"
