"""bench/threadcpu.py's `--rounds`: the named configs measured in alternating short
slices of wrk (32 clients), one gateway per config kept across the rounds (why:
threadcpu.py's docstring), for steadier throughput ratios on a machine whose speed
swings. Bounded: rounds x configs slices of `seconds` each, plus one 2-s warm-up a
gateway; traffic to loopback only.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from bench import load, systems
from bench.procs import Children
from bench.threadcpu import children_cpu, threads, upstream_ready

__all__ = ["run_rounds"]

_MOST_ROUNDS = 40
_MOST_SECONDS = 30.0


class Slice(NamedTuple):
    requests: int
    rps: float
    loop_s: float  # the event loop's thread (the process's first), user + system
    process_s: float  # every thread of the gateway's process
    children_s: float  # its child processes (the journal's writer)


def _cpu(pid: int) -> tuple[float, float, float]:
    loop = process = 0.0
    for (tid, _), (user, system, *_rest) in threads(pid).items():
        process += user + system
        if tid == str(pid):
            loop = user + system
    return loop, process, children_cpu(pid)


def measure_slice(workdir: Path, system: systems.System, seconds: float) -> Slice:
    assert system.child is not None
    pid = system.child.pid
    before = _cpu(pid)
    result = load.run_wrk(workdir, system, 32, seconds)
    after = _cpu(pid)
    loop, process, kids = (b - a for a, b in zip(before, after, strict=True))
    return Slice(result.requests, result.rps, loop, process, kids)


def order(runs: list[str], rounds: int) -> list[list[str]]:
    """Each round's order: as named, then reversed, and so on (A B, B A, A B...)."""
    return [list(runs) if number % 2 == 0 else runs[::-1] for number in range(rounds)]


def summary(runs: list[str], measured: list[dict[str, Slice]]) -> list[str]:
    """Per config after the first: its ratios to the first (one a round: the round's
    adjacent slices), their median and range; and every config's CPU a request."""
    first = runs[0]
    lines = []
    for run in runs[1:]:
        ratios = [r[run].rps / r[first].rps for r in measured if r[first].rps]
        if ratios:
            lines.append(f"{run}/{first}: median {statistics.median(ratios):.3f}, range "
                         f"{min(ratios):.3f}-{max(ratios):.3f} ({len(ratios)} pairs)")
    for run in runs:
        slices = [r[run] for r in measured]
        requests = sum(s.requests for s in slices) or 1
        per = 1e6 / requests
        lines.append(f"{run}: {requests:,} requests; µs a request: loop "
                     f"{sum(s.loop_s for s in slices) * per:.1f}, process "
                     f"{sum(s.process_s for s in slices) * per:.1f}, children "
                     f"{sum(s.children_s for s in slices) * per:.1f}")
    return lines


def run_rounds(runs: list[str], rounds: int, seconds: float,
               start: Callable[[Children, int, str], systems.System]) -> None:
    if len(set(runs)) != len(runs) or len(runs) < 2:
        raise SystemExit("--rounds: name two or more different configs")
    rounds = min(rounds, _MOST_ROUNDS)
    seconds = min(max(seconds, 1.0), _MOST_SECONDS)
    with upstream_ready() as (workdir, children, port):
        gateways = {run: start(children, port, run) for run in runs}
        for system in gateways.values():
            load.run_wrk(workdir, system, 32, 2)  # warm-up
        measured: list[dict[str, Slice]] = []
        for number, names in enumerate(order(runs, rounds), 1):
            taken = {run: measure_slice(workdir, gateways[run], seconds) for run in names}
            measured.append(taken)
            print(f"round {number}: " + ", ".join(
                f"{run} {taken[run].rps:,.0f}" for run in names) + " req/s; " + ", ".join(
                f"{run}/{runs[0]} {taken[run].rps / (taken[runs[0]].rps or 1):.3f}"
                for run in runs[1:]), flush=True)
        print("\n".join(summary(runs, measured)), flush=True)
