"""An orphaned journal child is reaped by the supervisor when the orphans are its own
(runtime/orphans.py, workers.py `supervise`): the container image runs the gateway as
PID 1, and a worker killed by SIGKILL leaves its journal child to finish alone; the
supervisor adopts it and, before session 31, never waited for it (a zombie until the
container stopped). Without a container: the gateway made a subreaper before it starts
(prctl PR_SET_CHILD_SUBREAPER, kept across exec), which adopts orphans as PID 1 does."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.e2e.pools import pool_emulator
from tests.e2e.test_journalleft_dead_journals import _children, _config, _load
from tests.processes import running
from tests.support import reserved_socket
from tests.waiting import until

pytestmark = pytest.mark.slow  # (a gateway of two workers and their journal children)

# The gateway's command line, run by a subreaper: this process becomes the gateway.
_AS_SUBREAPER = ("import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); "
                 "os.execv(sys.executable, [sys.executable, '-m', 'azure_openai_proxy', "
                 "*sys.argv[1:]])")


def _state(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent, or None: gone (reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def test_a_killed_workers_journal_child_is_reaped_once_it_exits(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    with pool_emulator(token_ms=2) as emulator:
        _config(config, emulator.url, tmp_path / "gw.db", "journal")
        with reserved_socket() as held:
            port = held.getsockname()[1]
            with running([sys.executable, "-c", _AS_SUBREAPER, "-c", str(config),
                          "-l", f"127.0.0.1:{port}", "--workers", "2"], port=port) as process:
                assert _load(port, 8) == 8
                supervisor = process.popen.pid
                worker = next(w for w in _children(supervisor) if _children(w))
                child = _children(worker)[0]
                os.kill(worker, signal.SIGKILL)
                # adopted by the supervisor, it writes what is left and exits
                until(lambda: _state(child) in (None, ("Z", supervisor)), 30,
                      "the orphaned child never exited")
                until(lambda: _state(child) is None, 20,
                      f"the orphaned child is left a zombie: {_state(child)}")
                # The killed worker replaced (once its holds' column is free: seconds)
                # before the stop: one not replaced by then makes the exit code 1
                # (workers.py Replacements.exit_code), whatever the reaping.
                until(lambda: len([w for w in _children(supervisor)
                                   if w != worker and _children(w)]) == 2, 60,
                      "the killed worker was never replaced")
                assert _load(port, 8) == 8
                process.signal(signal.SIGTERM)
                assert process.popen.wait(30) == 0, process.output()
