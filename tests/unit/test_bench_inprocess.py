"""bench/inprocess.py's governed mode counts what production runs, and nothing of its own
on another thread (a test of the tool, never a timing)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from bench.inprocess import _governed_key, _request, measure


def test_the_governed_mode_does_no_work_per_object_off_the_loop(tmp_path: Path) -> None:
    """Every call made on a thread other than the loop's and the ledger writer's is
    counted (builtins too): the tool's own flush must be a handful of calls, not a scan
    of the heap (`gc.get_objects` and an isinstance per object, which callgrind counted
    as a third thread of ~16,000 instructions per request)."""
    calls: Counter[str] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            name = threading.current_thread().name
            if name != "ledger-writer":
                calls[name] += 1

    request = _request(_governed_key(str(tmp_path)))
    split: list[float] = []
    threading.setprofile(profile)  # threads started from here on (not this one)
    try:
        asyncio.run(measure(200, 4, False, False, f"sqlite:///{tmp_path}/gateway.db",
                            request, split))
    finally:
        threading.setprofile(None)
    assert len(split) == 3  # the loop's and the writer's shares, the most records queued
    assert sum(calls.values()) < 10_000, calls.most_common()
