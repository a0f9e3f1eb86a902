"""The shared-limits tests' limiters mapped their table (a descriptor and a mapping
each) and never closed it: `shared_limiter` made the limiter and forgot the table, so
each differential test (300 runs, two workers each) left 600 descriptors open until
the process ended. The limiters are now made by `SharedWorkers` (the `shared`
fixture), which closes every mapping and removes every table when the test ends."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

from tests.unit.test_govleft_shared_differential import _run, _steps, assert_alike


def _descriptors(under: Path) -> int:
    """Descriptors open on files under `under` (removed ones too: their link keeps the
    path): only the tables', as other tests' threads running beside this one in the same
    worker open and close descriptors of their own (a count of every one read 350 == 356)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            count += os.readlink(f"/proc/self/fd/{name}").startswith(str(under))
    return count


def test_a_differential_run_leaves_no_descriptor_open(tmp_path: Path) -> None:
    rng = random.Random(3)
    assert_alike(tmp_path, _steps(rng), _run, 0)  # (imports and caches settled first)
    before = _descriptors(tmp_path)
    for number in range(1, 6):
        assert_alike(tmp_path, _steps(rng), _run, number)
    assert _descriptors(tmp_path) == before  # main: 10 more (two workers' tables a run)
    assert not list(tmp_path.iterdir())  # every table's file removed
