"""Busy polling: after a request arrives or Azure answers, the event loop keeps polling
its sockets for a short window instead of going to sleep.

Why: a quiet gateway sleeps between every two events of a request (the client's
request, Azure's answer, the client's next request), and on a virtual machine waking a
sleeping process costs tens of microseconds each time. Measured with `bench/run.py` on
the 2-vCPU bench machine, one client, nginx upstream: added p50 282 µs without, 216 µs
with a 200 µs window; at 32 clients no change (the loop is never idle there).

Cost: up to one window of CPU after each poke. Only a request's arrival and Azure's
answer poke (not every stream chunk), so a request costs at most about two windows of
spinning, whatever its length. `busy_poll_us: 0` turns it off. It is off by itself where
spinning would hurt: fewer than two CPUs to run on, or a cgroup CPU quota under two CPUs
(a container limited to a fraction of a CPU would spend its quota spinning and then be
throttled).

Spinning is a chain of `call_soon` callbacks: while one is ready, uvloop (and asyncio)
poll with a zero timeout rather than block.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from time import perf_counter

__all__ = ["BusyPoll", "cpus_available"]


class BusyPoll:
    """`poke()` keeps the running loop awake for `window_us` microseconds from now."""

    __slots__ = ("_loop", "_spinning", "_until", "_window")

    def __init__(self, window_us: int) -> None:
        self._window = window_us / 1_000_000
        self._until = 0.0
        self._spinning = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_setting(cls, window_us: int) -> BusyPoll | None:
        if window_us <= 0 or cpus_available() < 2:
            return None
        return cls(window_us)

    def poke(self) -> None:
        self._until = perf_counter() + self._window
        if not self._spinning:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._spinning = True
            loop.call_soon(self._tick)

    def _tick(self) -> None:
        if perf_counter() < self._until and self._loop is not None:
            self._loop.call_soon(self._tick)
        else:
            self._spinning = False


def cpus_available(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may use: its affinity, capped by a cgroup (v2 or v1) quota."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = float(os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    return min(cpus, quota) if quota is not None else cpus


def _cgroup_quota(root: Path) -> float | None:
    try:
        quota, _, period = (root / "cpu.max").read_text().partition(" ")  # cgroup v2
        if quota.strip() != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
