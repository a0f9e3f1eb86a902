"""Functions a test runs in a child process started with multiprocessing's `spawn`.

A spawned child imports the module of its target before running it: a target defined
in a test module brings that module's imports along (the gateway, pytest: ~0.8 s of
CPU a child, measured on tests/unit/test_workers.py's), where this module's standard
library costs ~35 ms. Keep it so: standard-library imports only."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

__all__ = ["exit_at_sigterm", "exit_with"]


def exit_with(code: int) -> None:
    """Exit at once with `code`; a negative one is death by that signal."""
    if code < 0:
        os.kill(os.getpid(), -code)
    os._exit(code)


def exit_at_sigterm(ready: Any) -> None:
    """A worker that serves until its SIGTERM, then drains and exits 0; `ready` (an
    Event) is set once the handler is in place."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # drained, as a worker does
    ready.set()
    time.sleep(30)  # (bounded: a failed test does not leave it behind; no lock held)
    os._exit(0)
