"""A per-deployment circuit breaker. Pure: the time is passed in.

    closed --(threshold consecutive failures)--> open
    open --(open_seconds passed; the next attempt is the probe)--> half-open
    half-open --(probe succeeds)--> closed
    half-open --(probe fails)--> open again (as the request's own doing: when the
                                 probes of two callers have failed)

While half-open exactly one attempt (the probe) is let through; others treat the
deployment as unavailable until the probe's verdict is in.

Whose failures open it. A failure that cannot be the request's doing (no connection,
a reset, a 502/503/504) counts for everyone: `threshold` of them in a row open the
circuit whoever sent the requests. One that may be the request's own (`own`: an answered
500, a timeout after the request was sent) opens it only when the streak holds two or
more callers: a streak of one caller's own failures opens that caller's circuit
(`balancing/callers.py`), not the deployment's, so one tenant's poisoned or huge
requests cannot take a shared deployment away from the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["CircuitBreaker", "CircuitState"]

CircuitState = Literal["closed", "open", "half-open"]


@dataclass(slots=True)
class CircuitBreaker:
    threshold: int
    open_seconds: float
    state: CircuitState = "closed"
    failures: int = 0
    opened_until: float = 0.0
    probing: bool = False
    sure: int = 0  # failures in the streak that were not the request's own
    first: str | None = None  # the caller of the streak's first failure
    spread: bool = False  # a second caller failed in the streak
    probe_failed: bool = False  # half-open: a probe failed as its request's own doing
    probe_failed_by: str | None = None  # (whose)

    def available(self, now: float) -> bool:
        """Whether an attempt may start now."""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now >= self.opened_until
        return not self.probing

    def available_at(self) -> float:
        """When an attempt may start next: now-ish when closed, `inf` while a probe is out."""
        if self.state == "open":
            return self.opened_until
        if self.state == "half-open" and self.probing:
            return math.inf
        return 0.0

    def admit(self, now: float) -> bool:
        """An attempt starts; True when it is the half-open probe."""
        if self.state == "open" and now >= self.opened_until:
            self.state = "half-open"
        if self.state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self) -> None:
        # Once per successful answer: nothing written when there is nothing to undo.
        # (`first` and `spread` are set afresh by a streak's first failure.)
        if self.failures or self.state != "closed":
            self.state = "closed"
            self.failures = 0
            self.sure = 0
            self.probing = False

    def failed(self, now: float, caller: str | None = None, own: bool = False) -> bool:
        """Count a failure of `caller`'s request (`own`: one that may be the request's
        own doing); True when this one opened the circuit."""
        if self.state == "half-open":
            if own and (not self.probe_failed or self.probe_failed_by == caller):
                # One caller's request failing proves nothing about the others': the
                # next attempt probes again (the caller's own circuit counts this one),
                # so a caller whose requests always fail cannot keep the circuit open
                # by sending every probe. A second caller's probe failing reopens it.
                self.probe_failed, self.probe_failed_by = True, caller
                self.probing = False
                return False
            self._open(now)
            return True
        self.failures += 1
        if not own:
            self.sure += 1
        if self.failures == 1:
            self.first, self.spread = caller, False
        elif caller != self.first:
            self.spread = True
        if self.state == "closed" and self.failures >= self.threshold and (
            self.spread or self.sure >= self.threshold
        ):
            self._open(now)
            return True
        return False

    def forget(self, caller: str | None) -> None:
        """`caller`'s own circuit opened: a streak that is all its own stops counting
        its own failures, so one failure of another caller does not make it "spread"."""
        if not self.spread and self.first == caller and self.failures > self.sure:
            self.failures = self.sure
            if not self.failures:
                self.first = None

    def abandoned(self) -> None:
        """The probe ended without a verdict (the client left): let another probe go."""
        self.probing = False

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_until = now + self.open_seconds
        self.probing = False
        self.probe_failed = False
