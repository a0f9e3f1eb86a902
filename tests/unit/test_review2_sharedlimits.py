"""Review 2 (limits shared across workers): failing tests that demonstrate findings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Refusal
from azure_openai_proxy.governance.sharedlimits import SharedLimits
from tests.unit.test_sharedlimits import Clock, admitted, shared_limiter


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
