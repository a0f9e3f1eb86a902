"""One deployment's circuits per caller. Pure: the time is passed in.

A caller (a virtual key, a static client key by its hash, or "anonymous") whose own
failures on a deployment (an answered 500, a timeout after the request was sent; see
`balancing/circuit.py`) reach the threshold in a row gets a circuit of its own there:
open for `open_seconds`, then one probe of its own, as the deployment's circuit does.
Only that caller's success closes it: the others' successes prove the deployment works,
not that this caller's requests do. Other callers keep using the deployment.

Callers are many, so at most `MAX_CALLERS` are kept per deployment; a new one pushes out
the oldest whose circuit is closed. When every one kept is held off, a new caller's
failures count for the deployment as everyone's (so many callers failing on their own is
the deployment's doing), and no held-off caller is pushed out of its circuit. A caller's
entry goes at its first success. The map is empty on a healthy deployment, and the
request path looks no further than that.
"""

from __future__ import annotations

from azure_openai_proxy.balancing.circuit import CircuitBreaker

__all__ = ["ANONYMOUS", "MAX_CALLERS", "CallerCircuits"]

MAX_CALLERS = 256
# Every request without a key (no client keys, none passed through) is this one caller.
ANONYMOUS = "anonymous"


class CallerCircuits(dict[str, CircuitBreaker]):
    """Caller id -> its circuit on one deployment (a dict: an empty one is falsy at C
    speed, which is all a healthy deployment's requests ask of it)."""

    __slots__ = ()

    def blocks(self, caller: str, now: float) -> bool:
        """Whether `caller`'s own circuit keeps it off the deployment now."""
        breaker = self.get(caller)
        return breaker is not None and not breaker.available(now)

    def available_at(self, caller: str) -> float:
        breaker = self.get(caller)
        return 0.0 if breaker is None else breaker.available_at()

    def admit(self, caller: str, now: float) -> bool:
        """`caller`'s attempt starts; True when it is the probe of its open circuit."""
        breaker = self.get(caller)
        return breaker is not None and breaker.state != "closed" and breaker.admit(now)

    def failed(self, caller: str, now: float, threshold: int, open_seconds: float,
               probe: bool = True) -> bool:
        """Count one of `caller`'s own failures; True when it opened its circuit.
        `probe`: False for an attempt that is not its half-open circuit's probe (one
        sent before the circuit opened): only the probe's answer is the verdict."""
        breaker = self.get(caller)
        if breaker is not None and not probe and breaker.state == "half-open":
            return False
        if breaker is None:
            if len(self) >= MAX_CALLERS:
                self._make_room()
            breaker = self[caller] = CircuitBreaker(threshold, open_seconds)
        # Each failure here is the caller's own: counted as "sure" within its circuit.
        return breaker.failed(now, caller)

    def full_without(self, caller: str) -> bool:
        """Whether `caller` has no entry and every one kept holds its caller off: a new
        entry would push out an open circuit, and that caller would escape it."""
        return len(self) >= MAX_CALLERS and caller not in self and all(
            breaker.state != "closed" for breaker in self.values()
        )

    def succeeded(self, caller: str) -> None:
        self.pop(caller, None)

    def abandoned(self, caller: str) -> None:
        """`caller`'s probe ended without a verdict on its requests."""
        breaker = self.get(caller)
        if breaker is not None:
            breaker.abandoned()

    def state_of(self, caller: str) -> str:
        """`caller`'s own circuit here: "closed" when it has none."""
        breaker = self.get(caller)
        return "closed" if breaker is None else breaker.state

    def open_count(self, now: float) -> int:
        """Callers kept off the deployment now (for health output: a count, no ids)."""
        return sum(1 for breaker in self.values() if not breaker.available(now))

    def _make_room(self) -> None:
        victim = next((c for c, b in self.items() if b.state == "closed"), None)
        del self[next(iter(self)) if victim is None else victim]
