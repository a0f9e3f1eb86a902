"""Two workers sharing a table against one worker, when the workers' key directories read
the store at different times (governance/sharedrows.py: the row's version). Each worker
reads the store (the newest version written so far) and installs what it read later,
maybe after the other has installed something newer, and skipping every version between
its reads; sometimes a whole read. The one worker installs, at each moment, the newest
version either worker has installed: two workers must answer every request as it does
(admitted, or refused for the same limit, with the same limits and remaining counts, to
rounding), whichever worker takes it and with whatever limits that worker loaded.
Seeded and bounded: 300 runs of 30 steps, a few seconds.

Before the version (session 27), the first run that installs an older version after a
newer one differs (the older limit was written over the newer)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter
from tests.unit.test_govleft_shared_differential import _limits, assert_alike
from tests.unit.test_sharedlimits import Clock

Step = tuple[Any, ...]
_NAMES = frozenset({"key:k", "team:t"})


def _some(rng: random.Random) -> Limits:
    """Random limits, or none at all (their row then says so)."""
    return Limits() if rng.random() < 0.15 else _limits(rng)


def _steps(rng: random.Random) -> list[Step]:
    steps: list[Step] = [("first", _limits(rng), _limits(rng))]
    for _ in range(30):
        roll = rng.random()
        if roll < 0.15:
            steps.append(("write", _some(rng), _some(rng)))
        elif roll < 0.3:
            steps.append(("read", rng.randrange(2)))
        elif roll < 0.45:
            steps.append(("install", rng.randrange(2), rng.random() < 0.2))
        elif roll < 0.7:
            steps.append(("take", rng.randrange(2), rng.choice([0, 1, 100, 600, 5000])))
        elif roll < 0.75:
            steps.append(("reset", rng.randrange(2)))
        elif roll < 0.88:
            steps.append(("settle", rng.choice([None, 0, 50, 3000, 50_000])))
        else:
            steps.append(("wait", rng.choice([0.5, 5.0, 30.0, 200.0])))
    return steps


def _loaded(versions: list[tuple[Limits, Limits]], version: int, whole: bool,
            was: int) -> LoadedLimits:
    """What the key directory hands a worker that had loaded version `was`: a whole read
    names the subjects whose limits differ from before; a read of the change log, the
    subjects written since (here, both every time)."""
    key, team = versions[version]
    changed = _NAMES if not whole else frozenset(
        name for name, before, now in zip(("key:k", "team:t"), versions[was], versions[version],
                                          strict=True) if before != now)
    return LoadedLimits({"key:k": key, "team:t": team}, version, changed, whole)


def _run(workers: list[RateLimiter], clock: Clock, steps: list[Step]) -> list[Step]:
    """`steps` on two workers, or on one (`workers` of one: it installs the newest
    version installed by either, and takes both workers' requests). A run ends at a
    take while the other worker holds a request it took when its key or team had no
    limit (maybe no row: it counted it alone, and counts it in a row set since from its
    next request of the key or its next reload on; the one worker counts it at once)."""
    versions = [(steps[0][1], steps[0][2])]  # by log position: key k's and team t's limits
    read, loaded = [0, 0], [0, 0]  # each worker's last read, and what it installed
    newest = 0  # the newest version installed by either worker
    held: list[tuple[RateLimiter, Admission, int]] = []  # and the worker: -1 if unlimited
    seen: list[Step] = []
    for worker in workers:  # its first read: whole, what changed unknown
        worker.forget(LoadedLimits({"key:k": steps[0][1], "team:t": steps[0][2]}, 0, None))
    for step in steps:
        if step[0] == "write":
            versions.append((step[1], step[2]))
        elif step[0] == "read":
            read[step[1]] = len(versions) - 1
        elif step[0] == "install" and read[step[1]] > loaded[step[1]]:
            at, version = step[1], read[step[1]]
            if len(workers) == 2:
                workers[at].forget(_loaded(versions, version, step[2], loaded[at]))
            elif version > newest:
                workers[0].forget(_loaded(versions, version, step[2], newest))
            loaded[at], newest = version, max(newest, version)
        elif step[0] == "take":
            if any(taker not in (-1, step[1]) for _, _, taker in held):
                break
            worker = workers[step[1] % len(workers)]
            # A worker plans with what it loaded; the one worker with the newest.
            key, team = versions[loaded[step[1]] if len(workers) == 2 else newest]
            result = worker.take(worker.plan("k", key, "t", team), step[2])
            if isinstance(result, Admission):
                unlimited = Limits() in versions[loaded[step[1]]]
                held.append((worker, result, step[1] if unlimited else -1))
            seen.append(("ok" if isinstance(result, Admission) else result.kind,
                         result.headers))
        elif step[0] == "settle" and held:
            worker, admission, _ = held.pop(0)
            worker.settle(admission, step[1])
        elif step[0] == "reset":
            workers[step[1] % len(workers)].reset("key:k")
        elif step[0] == "wait":
            clock.now += step[1]
    return seen


def test_two_workers_reading_at_different_times_answer_as_one(tmp_path: Path) -> None:
    rng = random.Random(28)
    for number in range(300):
        assert_alike(tmp_path, _steps(rng), _run, number)
