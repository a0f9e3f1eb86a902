"""Orphans reaped by the supervisor of `--workers N` (workers.py `supervise`).

The container image runs the gateway as PID 1 (Dockerfile: ENTRYPOINT, no init), so
every process orphaned below it becomes its child: the journal child of a worker killed
by SIGKILL (journalchild.py: it writes the rest of the journal and exits) most of all.
multiprocessing waits for the workers only; an adopted process that exits stays a
zombie (a slot of the process table, its pid held) until the container stops. Outside a
container the same holds under a subreaper (PR_SET_CHILD_SUBREAPER: systemd's user
manager, some process supervisors); elsewhere init reaps them and this finds none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

__all__ = ["adopts_orphans", "reap_orphans"]

_PR_GET_CHILD_SUBREAPER = 37


def adopts_orphans() -> bool:
    """This process is PID 1 or a subreaper: orphans below it become its children. (Any
    other reaps none: a child it did not make cannot be one, and a test's own processes
    started beside a supervisor are left to their own waits.)"""
    if os.getpid() == 1:
        return True
    try:
        import ctypes  # (here: a Python built without libffi has none; store/replaced.py)
    except ImportError:
        return False
    flag = ctypes.c_int(0)
    with contextlib.suppress(OSError, AttributeError):  # (not Linux: no prctl)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag),
                                                0, 0, 0)
    return flag.value != 0


def reap_orphans(keep: Collection[int]) -> list[int]:
    """Wait for the children that exited, other than `keep` (the workers: their own
    `join` waits for them and reads their exit codes); the pids reaped. Never blocks.
    A worker's exit seen first ends the pass: the orphans behind it wait for the next."""
    reaped: list[int] = []
    while True:
        try:
            # WNOWAIT: looked at, not reaped: a worker's is left to multiprocessing
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped  # no child at all
        if info is None or info.si_pid in keep:
            return reaped
        os.waitpid(info.si_pid, 0)
        reaped.append(info.si_pid)
