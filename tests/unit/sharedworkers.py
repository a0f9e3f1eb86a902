"""Limiters of workers sharing a rate-limit table (governance/sharedlimits.py), for one
test: the `shared` fixture (tests/unit/conftest.py). Every table a limiter maps is
closed, and every table's file removed, when the test ends: a limiter's mapping holds
a descriptor and a mapping of its own (the differential tests make 600 a test)."""

from __future__ import annotations

from pathlib import Path

from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.governance.sharedlimits import SharedLimits, SharedTable

__all__ = ["Clock", "SharedWorkers"]


class Clock:
    """The limiters' clock, moved by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SharedWorkers:
    """Tables made in `directory`, and the limiters sharing them, until `close`."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._specs: list[SharedLimits] = []
        self._tables: list[SharedTable] = []

    def table(self, slots: int = 64, workers: int = 2) -> SharedLimits:
        """A new table (removed by `close`)."""
        spec = SharedLimits.create(workers=workers, slots=slots, directory=str(self._directory))
        self._specs.append(spec)
        return spec

    def limiter(self, spec: SharedLimits, worker: int, clock: Clock) -> RateLimiter:
        """Worker number `worker`'s limiter, counting in `spec` (its mapping closed by
        `close`)."""
        table = spec.open(worker)
        self._tables.append(table)
        limiter = RateLimiter(clock)
        limiter.share(table)
        return limiter

    def pair(self, slots: int = 64, clock: Clock | None = None) -> tuple[
            SharedLimits, Clock, RateLimiter, RateLimiter]:
        """A new table of two workers, and their limiters on one clock."""
        spec, clock = self.table(slots), clock or Clock()
        return spec, clock, self.limiter(spec, 0, clock), self.limiter(spec, 1, clock)

    def close(self) -> None:
        tables, self._tables = self._tables, []
        for table in tables:
            table.close()
        specs, self._specs = self._specs, []
        for spec in specs:
            spec.remove()

    def __enter__(self) -> SharedWorkers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
