"""A per-deployment circuit breaker. Pure: the time is passed in.

    closed --(threshold consecutive failures)--> open
    open --(open_seconds passed; the next attempt is the probe)--> half-open
    half-open --(probe succeeds)--> closed
    half-open --(probe fails)--> open again

While half-open exactly one attempt (the probe) is let through; others treat the
deployment as unavailable until the probe's verdict is in.
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
        self.state = "closed"
        self.failures = 0
        self.probing = False

    def failed(self, now: float) -> bool:
        """Count a failure; True when this one opened the circuit."""
        if self.state == "half-open":
            self._open(now)
            return True
        self.failures += 1
        if self.state == "closed" and self.failures >= self.threshold:
            self._open(now)
            return True
        return False

    def abandoned(self) -> None:
        """The probe ended without a verdict (the client left): let another probe go."""
        self.probing = False

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_until = now + self.open_seconds
        self.probing = False
