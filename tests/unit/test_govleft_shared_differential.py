"""One worker against two sharing a table (governance/ratelimit.py, sharedlimits.py), on
random runs of a key's and its team's limits changed, removed and set again (each reload
as the key directory makes it: `forget` with the limits loaded), takes alternating
between the two workers, settles of any usage (debts too), an operator's resets and
time passing: every request gets the same answer, admitted or refused for the same
limit, with the same limits and remaining counts (to rounding: the sums are added in
another order). Seeded and bounded: 300 runs of 25 steps, about three seconds. It
found the parallel count's two defects of govleft (requests in flight before a limit
was set; a stale count after a row was given back).

A reload may reach the second worker late (its key directory polls every 0.5 s),
then with the newest limits only, skipping the ones between (two admin writes within a
poll). A late reload changes the key's limits' values, not which it has: a worker yet
to reload counts by the limits another set in the shared row (`Subject.follow`), for
those it has too. Limits are one object per value, as the key store gives them
(store/keys.py `_limits`): a worker that skipped a raise loads the very object it had.
With both, it found a TPM raised in debt and lowered again forgiving the next debt
(session 27, `configure_shared`)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter
from tests.unit.sharedworkers import Clock, SharedWorkers

Step = tuple[Any, ...]


_RPMS, _TPMS, _PARALLELS = [3, 10, 1000], [500, 1000, 20_000], [1, 3]


@functools.cache
def _interned(rpm: int | None, tpm: int | None, parallel: int | None) -> Limits:
    return Limits(rpm=rpm, tpm=tpm, max_parallel=parallel)


def _limits(rng: random.Random) -> Limits:
    return _interned(rng.choice([None, *_RPMS]), rng.choice([None, *_TPMS]),
                     rng.choice([None, *_PARALLELS]))


def _changed(rng: random.Random, limits: Limits) -> Limits:
    """Other values of the limits `limits` has (a late reload's change)."""
    return _interned(limits.rpm and rng.choice(_RPMS), limits.tpm and rng.choice(_TPMS),
                     limits.max_parallel and rng.choice(_PARALLELS))


def _steps(rng: random.Random) -> list[Step]:
    limits = _limits(rng)
    steps: list[Step] = [("reload", limits, _limits(rng), False)]
    team = steps[0][2]
    for _ in range(25):
        roll = rng.random()
        if roll < 0.1:
            limits, team = _limits(rng), _limits(rng)
            steps.append(("reload", limits, team, False))
        elif roll < 0.2:
            limits = _changed(rng, limits)
            steps.append(("reload", limits, team, True))
        elif roll < 0.6:
            steps.append(("take", limits, rng.choice([0, 1, 100, 600, 5000])))
        elif roll < 0.67:
            steps.append(("reset",))
        elif roll < 0.8:
            steps.append(("settle", rng.choice([None, 0, 50, 3000, 50_000])))
        else:
            steps.append(("wait", rng.choice([0.5, 5.0, 30.0, 200.0])))
    return steps


def _run(workers: list[RateLimiter], clock: Clock, steps: list[Step]) -> list[Step]:
    seen: list[Step] = []
    held: list[tuple[RateLimiter, Admission]] = []
    loaded = [(Limits(), Limits()) for _ in workers]  # each worker's key and team limits
    for number, step in enumerate(steps):
        if step[0] == "reload":
            for at, worker in enumerate(workers):
                if at == 0 or not step[3]:  # late: the second reloads at the next one
                    loaded[at] = step[1], step[2]
                    worker.forget({"key:k": step[1], "team:t": step[2]})
        elif step[0] == "take":
            at = number % len(workers)
            worker, (key, team) = workers[at], loaded[at]
            result = worker.take(worker.plan("k", key, "t", team), step[2])
            if isinstance(result, Admission):
                held.append((worker, result))
            kind = "ok" if isinstance(result, Admission) else result.kind
            seen.append((kind, result.headers))
        elif step[0] == "settle" and held:
            worker, admission = held.pop(0)
            worker.settle(admission, step[1])
        elif step[0] == "reset":  # the admin API's, answered by either worker
            workers[number % len(workers)].reset("key:k" if number % 3 else "team:t")
        elif step[0] == "wait":
            clock.now += step[1]
    return seen


def _alike(one: Step, two: Step) -> bool:
    (kind, lines), (other, other_lines) = one, two
    if kind != other or lines.keys() != other_lines.keys():
        return False
    for name, value in lines.items():
        if name.startswith("x-ratelimit-limit-") and value != other_lines[name]:
            return False
        if name.startswith("x-ratelimit-remaining-") and abs(int(value)
                                                              - int(other_lines[name])) > 1:
            return False
    return True


def assert_alike(tmp_path: Path, steps: list[Step],
                 run: Callable[[list[RateLimiter], Clock, list[Step]], list[Step]],
                 number: int) -> None:
    """`run` of `steps` on one worker and on two sharing a table: the same answers."""
    clock = Clock()
    one = run([RateLimiter(clock)], clock, steps)
    with SharedWorkers(tmp_path) as shared:
        _, clock, first, second = shared.pair()
        two = run([first, second], clock, steps)
    differing = [n for n, (a, b) in enumerate(zip(one, two, strict=True)) if not _alike(a, b)]
    assert not differing, (number, differing[0], one[differing[0]], two[differing[0]], steps)


def test_two_workers_answer_a_key_as_one_worker_does(tmp_path: Path) -> None:
    rng = random.Random(11)
    for number in range(300):
        assert_alike(tmp_path, _steps(rng), _run, number)
