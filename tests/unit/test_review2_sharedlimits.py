"""Review 2 (limits shared across workers): failing tests that demonstrate findings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter, Refusal
from azure_openai_proxy.governance.sharedlimits import SharedLimits
from tests.unit.test_sharedlimits import Clock, admitted, shared_limiter


@pytest.mark.xfail(strict=True, reason="review2 finding S1: a bug to fix (see /work/notes/s7/review2-findings.md)")
def test_keys_without_limits_do_not_take_the_rows_a_limited_key_needs(tmp_path: Path) -> None:
    # Every key that makes a request claims a row in `_plan_of`, limits or none, and
    # rows are never freed (a deleted key's stays): once keys without any limit have
    # filled the table, a key with RPM 1 is counted by each worker alone, so with two
    # workers it gets two requests a minute (N with N workers), silently past the one
    # warning.
    spec = SharedLimits.create(workers=2, slots=4, directory=str(tmp_path))
    try:
        clock = Clock()
        first, second = shared_limiter(spec, 0, clock), shared_limiter(spec, 1, clock)
        for n in range(4):  # unlimited keys (or deleted ones): each takes a row
            admitted(first.take(first.plan(f"open{n}", Limits(), None, None), 0))
        first.forget([])  # the keys were deleted: their rows stay taken
        limited = Limits(rpm=1)
        admitted(first.take(first.plan("limited", limited, None, None), 0))
        assert isinstance(second.take(second.plan("limited", limited, None, None), 0),
                          Refusal), "an RPM of 1 admitted twice in one minute"
    finally:
        spec.remove()


@pytest.mark.xfail(strict=True, reason="review2 finding S2 (risk): demonstrates it (see /work/notes/s7/review2-findings.md)")
def test_the_table_of_a_killed_parent_is_removed_at_the_next_start(tmp_path: Path) -> None:
    # The parent removes its table in a `finally`: a parent killed with SIGKILL (the
    # OOM killer, `kill -9`, a supervisor's hard stop) leaves its file, in /dev/shm
    # (memory) by default, and the next start makes a new one under a new random name
    # and never looks for the old: one table (1.3 MB with two workers) leaked per kill.
    script = (
        "import os, signal, sys\n"
        "from azure_openai_proxy.governance.sharedlimits import SharedLimits\n"
        "SharedLimits.create(workers=2, slots=64, directory=sys.argv[1])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False,
                            timeout=60)
    assert killed.returncode == -9
    assert len(os.listdir(tmp_path)) == 1  # the killed parent's table
    following = SharedLimits.create(workers=2, slots=64, directory=str(tmp_path))
    following.remove()  # the next server ran and exited cleanly
    assert os.listdir(tmp_path) == [], "a killed parent's table is never removed"


@pytest.mark.xfail(strict=True, reason="review2 finding S3 (nit): demonstrates it (see /work/notes/s7/review2-findings.md)")
def test_a_raised_limit_keeps_what_was_left_shared_as_unshared(tmp_path: Path) -> None:
    # `_Subject.configure` refills at the old rate, then keeps what is left (capped by
    # the new limit). `configure_shared` discards that refill (it pulls the row's stale
    # level and stamp back over it), so the idle time is refilled at the *new* rate on
    # the next take: a key raised from RPM 10 to 1000 after an idle hour has 1000 left
    # shared, 10 unshared (then both refill at 1000 a minute).
    def remaining_after_raise(limiter_of: Callable[[Clock], RateLimiter]) -> str:
        clock = Clock()
        limiter = limiter_of(clock)
        for _ in range(10):
            admitted(limiter.take(limiter.plan("k", Limits(rpm=10), None, None), 0))
        clock.now += 3600.0  # an idle hour: the old minute is full again (10)
        result = admitted(limiter.take(limiter.plan("k", Limits(rpm=1000), None, None), 0))
        return result.headers["x-ratelimit-remaining-requests"]

    spec = SharedLimits.create(workers=2, slots=64, directory=str(tmp_path))
    try:
        unshared = remaining_after_raise(RateLimiter)
        shared = remaining_after_raise(lambda clock: shared_limiter(spec, 0, clock))
    finally:
        spec.remove()
    assert shared == unshared, (shared, unshared)
