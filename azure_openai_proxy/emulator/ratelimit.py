"""Per-deployment rate limits the way Azure applies them (wire reference, section 5).

Tokens: a one-minute sliding window of estimated costs against `tpm`.
Requests: `rpm / 6` requests per sliding 10-second window.
Tests may shrink both windows together (`rate_window_seconds`), keeping their 6:1 ratio.
A request's cost is estimated on arrival, `estimate_cost`; it is charged when admitted.
Pure: time comes from the injected `clock`, so tests drive it with a fake one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TOKEN_WINDOW = 60.0
REQUEST_WINDOW = 10.0


def estimate_cost(prompt_chars: int, max_tokens: int) -> int:
    """Azure's arrival estimate: prompt characters / 4 plus the requested maximum."""
    return math.ceil(prompt_chars / 4) + max(0, max_tokens)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one admission check, and what the headers should say after it."""

    allowed: bool
    retry_after: float
    limit_tokens: int
    limit_requests: int
    remaining_tokens: int
    remaining_requests: int
    limited_by: str | None = None  # "tokens" or "requests" when refused


class DeploymentWindow:
    """The sliding windows of one deployment."""

    def __init__(self, tpm: int, rpm: int, token_window: float = TOKEN_WINDOW) -> None:
        self.tpm = tpm
        self.rpm = rpm
        self.token_window = token_window
        self.request_window = token_window * REQUEST_WINDOW / TOKEN_WINDOW
        # Requests allowed per 10 s; fractional allowances are rounded down, minimum 1.
        self.per_window = max(1, rpm // 6)
        self._tokens: deque[tuple[float, int]] = deque()
        self._requests: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._tokens and self._tokens[0][0] <= now - self.token_window:
            self._tokens.popleft()
        while self._requests and self._requests[0] <= now - self.request_window:
            self._requests.popleft()

    def _used_tokens(self) -> int:
        return sum(cost for _, cost in self._tokens)

    def admit(self, now: float, cost: int) -> Verdict:
        """Charge `cost` tokens and one request if both windows have room."""
        self._expire(now)
        cost = min(cost, self.tpm)  # a request larger than the quota waits for an empty window
        token_wait, request_wait = self._token_wait(now, cost), self._request_wait(now)
        wait = max(token_wait, request_wait)
        if wait <= 0:
            self._tokens.append((now, cost))
            self._requests.append(now)
            return self._verdict(True, 0.0)
        return self._verdict(False, wait, "tokens" if token_wait >= request_wait else "requests")

    def peek(self, now: float) -> Verdict:
        self._expire(now)
        return self._verdict(True, 0.0)

    def _token_wait(self, now: float, cost: int) -> float:
        excess = self._used_tokens() + cost - self.tpm
        if excess <= 0:
            return 0.0
        for stamp, spent in self._tokens:
            excess -= spent
            if excess <= 0:
                return stamp + self.token_window - now
        return self.token_window

    def _request_wait(self, now: float) -> float:
        if len(self._requests) < self.per_window:
            return 0.0
        oldest_needed = self._requests[len(self._requests) - self.per_window]
        return oldest_needed + self.request_window - now

    def _verdict(self, allowed: bool, wait: float, limited_by: str | None = None) -> Verdict:
        return Verdict(
            allowed=allowed,
            retry_after=wait,
            limit_tokens=self.tpm,
            limit_requests=self.rpm,
            remaining_tokens=max(0, self.tpm - self._used_tokens()),
            remaining_requests=max(0, self.per_window - len(self._requests)),
            limited_by=limited_by,
        )


class RateLimiter:
    """The windows of every limited deployment; deployments without `tpm` are unlimited."""

    def __init__(
        self,
        limits: Iterable[tuple[str, int | None, int | None]],
        clock: Callable[[], float],
        token_window: float = TOKEN_WINDOW,
    ) -> None:
        self._limits = {name: (tpm, rpm) for name, tpm, rpm in limits}
        self._clock = clock
        self._token_window = token_window
        self._windows: dict[str, DeploymentWindow] = {}

    def _window(self, name: str) -> DeploymentWindow | None:
        tpm, rpm = self._limits.get(name, (None, None))
        if tpm is None:
            return None
        if name not in self._windows:
            rpm = rpm if rpm is not None else tpm * 6 // 1000
            self._windows[name] = DeploymentWindow(tpm, rpm, self._token_window)
        return self._windows[name]

    def admit(self, name: str, cost: int) -> Verdict | None:
        """None when `name` is unlimited; otherwise the verdict (and the charge if allowed)."""
        window = self._window(name)
        return None if window is None else window.admit(self._clock(), cost)

    def peek(self, name: str) -> Verdict | None:
        window = self._window(name)
        return None if window is None else window.peek(self._clock())

    def reset(self) -> None:
        self._windows.clear()
