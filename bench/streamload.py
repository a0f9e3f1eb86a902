"""A raw-socket load generator for many concurrent SSE streams (issue 15).

Each stream is one `asyncio.Protocol` on uvloop: it writes one prepared request (bytes,
`Connection: close`) and, for each piece that arrives, does two `bytes` scans in C: the
content frames it holds (every content token of the paced upstream ends in
`bench.paced.CONTENT_MARK`, a byte no other frame holds) and `[DONE]`. No parsing, no
allocation per frame beyond the piece itself, no timer per stream: one sweep every
half second finds the silent ones. Streams are spread over processes (`procs`), each with
its own loop and its share of the ramp, and each reports its own CPU time so the
generator can show it was not the bottleneck.

Per stream: time to first token (from the moment its connection is begun, so a dropped
connect shows), and its frames' mean lateness: the mean over its content frames of
(arrival - start - k * interval) for frame k = 1..n. The upstream sends frame k at
k * interval after the request, so against a direct run the difference is the time a
proxy adds to each frame.

Outcomes: completed (`[DONE]` seen), stalled (silent for `stall_s`, or still open at the
run's end), errors (connect failed, a status other than 200, closed before `[DONE]`).
A stalled stream is also counted by where it stopped: its connection never completed (a
SYN the listener's full accept queue dropped), connected but not a byte received (the
request waited in the system), or stopped mid-stream; the three say which part of an
overloaded system starved it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import cast

from bench.paced import CONTENT_MARK

__all__ = ["LoadPlan", "LoadShare", "raise_fd_limit", "run_load", "start_time"]

_DONE = b"[DONE]"
_OK = b"HTTP/1.1 200"


@dataclass(frozen=True)
class LoadPlan:
    """What to open: `streams` requests to `host:port` over `ramp_s`; each expected to
    carry content frames `interval_s` apart."""

    host: str
    port: int
    request: bytes
    streams: int
    ramp_s: float
    interval_s: float
    stall_s: float = 10.0
    limit_s: float = 60.0  # after the last stream was begun; then what is open is stalled
    procs: int = 1


@dataclass
class LoadShare:
    """One process's results (merged with `merge`)."""

    streams: int = 0
    completed: int = 0
    stalled: int = 0
    stalled_unconnected: int = 0  # of `stalled`: the TCP connection never completed
    stalled_unanswered: int = 0  # of `stalled`: connected, not a byte received
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    lateness_s: list[float] = field(default_factory=list)
    content_frames: int = 0
    bytes_in: int = 0
    cpu_s: float = 0.0
    seconds: float = 0.0

    def merge(self, other: LoadShare) -> None:
        self.streams += other.streams
        self.completed += other.completed
        self.stalled += other.stalled
        self.stalled_unconnected += other.stalled_unconnected
        self.stalled_unanswered += other.stalled_unanswered
        self.errors += other.errors
        self.error_samples = (self.error_samples + other.error_samples)[:5]
        self.ttft_s += other.ttft_s
        self.lateness_s += other.lateness_s
        self.content_frames += other.content_frames
        self.bytes_in += other.bytes_in
        self.cpu_s += other.cpu_s
        self.seconds = max(self.seconds, other.seconds)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


class _Stream(asyncio.Protocol):
    """One stream: the request out, the counting in."""

    __slots__ = ("_run", "begun", "checked", "ended", "first", "frames", "last", "sum_at",
                 "tail", "transport")

    def __init__(self, run: _Run, begun: float) -> None:
        self._run = run
        self.begun = self.last = begun
        self.first = 0.0
        self.frames = 0
        self.sum_at = 0.0
        self.tail = b""
        self.checked = False
        self.ended = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._run.plan.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.last = now
        run = self._run
        run.share.bytes_in += len(data)
        if not self.checked:
            head = self.tail + data
            if len(head) < len(_OK):
                self.tail = head
                return
            self.checked = True
            if not head.startswith(_OK):
                self.end("error", head[:40].decode("latin-1", "replace"))
                return
        count = data.count(CONTENT_MARK)
        if count:
            if not self.frames:
                self.first = now
            self.frames += count
            self.sum_at += count * now
        if _DONE in data or _DONE in self.tail + data[:8]:
            self.end("completed")
            return
        self.tail = data[-8:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended:
            self.end("error", f"closed before [DONE] ({type(exc).__name__ if exc else 'EOF'})")

    def end(self, outcome: str, why: str = "") -> None:
        if self.ended:
            return
        self.ended = True
        run = self._run
        share = run.share
        share.content_frames += self.frames
        if outcome == "completed":
            share.completed += 1
            if self.frames:
                share.ttft_s.append(self.first - self.begun)
                mean_k = (self.frames + 1) / 2
                share.lateness_s.append(self.sum_at / self.frames - self.begun
                                        - mean_k * run.plan.interval_s)
        elif outcome == "stalled":
            share.stalled += 1
            if self.transport is None:
                share.stalled_unconnected += 1
            elif not self.checked and not self.tail:
                share.stalled_unanswered += 1
        else:
            share.error(why)
        if self.transport is not None:
            self.transport.abort() if outcome != "completed" else self.transport.close()
        run.finished(self)


class _Run:
    """One process's share of the streams."""

    def __init__(self, plan: LoadPlan, indices: range) -> None:
        self.plan = plan
        self.indices = indices
        self.share = LoadShare(streams=len(indices))
        self.open: set[_Stream] = set()
        self.left = len(indices)
        self.all_done = asyncio.Event()

    def finished(self, stream: _Stream) -> None:
        self.open.discard(stream)
        self.left -= 1
        if self.left <= 0:
            self.all_done.set()

    async def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        stream = _Stream(self, time.perf_counter())
        self.open.add(stream)
        try:
            await loop.create_connection(lambda: stream, self.plan.host, self.plan.port)
        except OSError as exc:
            stream.end("error", f"connect: {exc}")

    def _sweep(self, deadline: float) -> None:
        now = time.perf_counter()
        for stream in list(self.open):
            if now >= deadline or now - stream.last > self.plan.stall_s:
                stream.end("stalled")
        if self.left > 0:
            asyncio.get_running_loop().call_later(0.5, self._sweep, deadline)

    async def run(self, start_at: float) -> LoadShare:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = sum(os.times()[:2])
        t0 = time.perf_counter()
        plan = self.plan
        tasks: set[asyncio.Task[None]] = set()
        for index in self.indices:
            delay = plan.ramp_s * index / plan.streams

            def begin() -> None:
                task = loop.create_task(self._begin())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

            loop.call_at(loop.time() + delay - (time.perf_counter() - t0), begin)
        deadline = t0 + plan.ramp_s + plan.limit_s
        loop.call_later(0.5, self._sweep, deadline)
        if self.left > 0:
            await self.all_done.wait()
        self.share.seconds = time.perf_counter() - t0
        self.share.cpu_s = sum(os.times()[:2]) - cpu0
        return self.share


def raise_fd_limit() -> int:
    """This process's soft descriptor limit raised to its hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def _share(plan: LoadPlan, part: int, start_at: float) -> LoadShare:
    """Run in a worker process: every `procs`-th stream from `part`."""
    import uvloop

    raise_fd_limit()
    indices = range(part, plan.streams, plan.procs)
    return uvloop.run(_Run(plan, indices).run(start_at))


def start_time(procs: int) -> float:
    """A wall-clock instant by which `procs` new worker processes are surely running."""
    return time.time() + 2.0 + 0.5 * procs


def run_load(plan: LoadPlan, start_at: float | None = None) -> LoadShare:
    """Open `plan.streams` streams over `plan.ramp_s` from `plan.procs` processes, all
    starting together (at `start_at`, wall clock, when given); their merged results."""
    total = LoadShare()
    with ProcessPoolExecutor(plan.procs, mp_context=get_context("spawn")) as pool:
        if start_at is None:
            start_at = start_time(plan.procs)
        futures = [pool.submit(_share, plan, part, start_at) for part in range(plan.procs)]
        for future in futures:
            total.merge(future.result())
    return total
