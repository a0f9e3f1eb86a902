"""Busy polling: after a request arrives or Azure answers a JSON request, the event loop
keeps polling its sockets for a short window instead of going to sleep, when the worker
is quiet enough for that to pay.

Why: a quiet gateway sleeps between every two events of a request (the client's
request, Azure's answer, the client's next request), and on a virtual machine waking a
sleeping process costs tens of microseconds each time. Measured with `bench/run.py` on
the 2-vCPU bench machine, one client, nginx upstream: added p50 282 µs without, 216 µs
with a 200 µs window; at 32 clients no change (the loop is never idle there).

Cost: up to one window of CPU after each poke that starts a spin. A request pokes once
its body is read (not a stream's: its first frame comes after Azure's time to first
token), and at its arrival when its body has not all come with its head (`body_due`:
httpx writes the two apart; a stream takes that window back once its body is read:
`retract`, `gateway/pipeline.py`); Azure's answer to a JSON request pokes too (not a
stream's: its frames come at Azure's pace, `gateway/attempts.py`). So a request costs at
most about two windows of spinning, whatever its length. A poke starts no spin while
more than `QUIET_AT_MOST` requests hold an upstream connection (the count the transport
keeps, read only when a spin would start): the loop has their events to wake it, and
between a stream's frames a spin is pure CPU (issue 15: at 1,000 one-frame streams busy
polling cost 60-120 µs of user CPU per stream, bench/README.md). `busy_poll_us: 0` turns
it off. It is off by itself where spinning would hurt: fewer than two CPUs to run on,
or a cgroup CPU quota under two CPUs (a container limited to a fraction of a CPU would
spend its quota spinning and then be throttled).

Spinning is a chain of `call_soon` callbacks: while one is ready, uvloop (and asyncio)
poll with a zero timeout rather than block.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from azure_openai_proxy.http.request import FastRequest

__all__ = ["QUIET_AT_MOST", "BusyPoll", "body_due", "cpus_available", "worth_spinning"]

# The most requests open (each holding an upstream connection) at which a poke still
# starts a spin. Measured: one client gains (p50 282 -> 216 µs added), 32 clients see no
# change, 1,000 streams only pay for it; a handful open still leaves the loop idle most
# of the time against a fast upstream.
QUIET_AT_MOST = 4


def worth_spinning(open_requests: int) -> bool:
    """Whether a poke should start a spin with `open_requests` requests in flight: only
    when the worker is quiet, so that the loop would otherwise go to sleep."""
    return open_requests <= QUIET_AT_MOST


def body_due(request: object) -> bool:
    """Whether `request` (a `FastRequest`) announced a body that has not all arrived: a
    client that writes its head and its body apart (httpx, so the `openai` SDK) sends the
    rest at once, and the loop had better poll for it than fall asleep."""
    return type(request) is FastRequest and request.body is not None and not request.body.done


def _none_open() -> int:
    return 0


class BusyPoll:
    """`poke()` keeps the running loop awake for `window_us` microseconds from now, unless
    `open_requests()` (requests in flight on this worker) says the worker is busy."""

    __slots__ = ("_before", "_loop", "_open", "_spinning", "_until", "_window")

    def __init__(self, window_us: int, open_requests: Callable[[], int] = _none_open) -> None:
        self._window = window_us / 1_000_000
        self._open = open_requests
        self._until = 0.0
        self._before = 0.0  # the window's end before the last poke (for `retract`)
        self._spinning = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_setting(cls, window_us: int,
                     open_requests: Callable[[], int] = _none_open) -> BusyPoll | None:
        if window_us <= 0 or cpus_available() < 2:
            return None
        return cls(window_us, open_requests)

    @property
    def spinning(self) -> bool:
        """A spin is under way (its window has not passed)."""
        return self._spinning

    def poke(self) -> float:
        """Keep the loop awake for a window from now. Returns the window's end, which
        `retract` takes back."""
        self._before = self._until
        self._until = until = perf_counter() + self._window
        if self._spinning and self._loop is not None and self._loop.is_running():
            return until
        if not worth_spinning(self._open()):
            return until  # other requests' events will wake the loop; a spin would only burn
        # Starting a chain: on the loop of the last one, kept (`asyncio.get_running_loop()`
        # is a getpid() system call on 3.11, and a quiet worker starts a chain per
        # request), or the loop running now where that one no longer runs (a chain left
        # on a stopped or closed loop, as when a test's loop ends mid-window, is
        # forgotten; a chain started on a stopped loop would never turn, and `_spinning`
        # would stay set).
        loop = self._loop
        if loop is None or not loop.is_running():
            self._loop = loop = asyncio.get_running_loop()
        self._spinning = True
        loop.call_soon(self._tick)
        return until

    def retract(self, until: float) -> None:
        """Take back the poke that returned `until` (a request that turned out not to be
        answered soon: a stream, whose Azure answer comes after its time to first token):
        the window ends where it ended before that poke, so a spin for it alone stops at
        its next turn. A later poke's window stands."""
        if self._until == until:
            self._until = self._before

    def _tick(self) -> None:
        if perf_counter() < self._until and self._loop is not None:
            self._loop.call_soon(self._tick)
        else:
            self._spinning = False


def cpus_available(
    cgroup_root: Path = Path("/sys/fs/cgroup"), own_cgroups: Path = Path("/proc/self/cgroup")
) -> float:
    """CPUs this process may use: its affinity, capped by the tightest CPU quota on its
    cgroup or any ancestor (cgroup v2, hybrid, or v1's cpu controller): a service under
    systemd's `CPUQuota=` or a container's `--cpus` both count."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = float(os.cpu_count() or 1)
    try:
        own = own_cgroups.read_text()
    except OSError:
        own = "0::/\n1:cpu:/\n"  # unknown: look at the root of each hierarchy
    quotas = _quotas(cgroup_root, own)
    return min(cpus, *quotas) if quotas else cpus


def _quotas(root: Path, own: str) -> list[float]:
    found: list[float] = []
    for line in own.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # v2 (at the root, or under unified/)
            for base in (root, root / "unified"):
                found += _up_the_tree(base, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # v1
            for base in {root / controllers, root / "cpu"}:
                found += _up_the_tree(base, path, _v1_quota)
    return found


def _up_the_tree(base: Path, path: str, quota_of: Callable[[Path], float | None]) -> list[float]:
    """The quotas set on `base/path` and each of its parents up to `base`."""
    found: list[float] = []
    directory = base / path.strip("/")
    while True:
        quota = quota_of(directory)
        if quota is not None:
            found.append(quota)
        if directory == base or base not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, _, period = (directory / "cpu.max").read_text().partition(" ")
        return None if quota.strip() == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
