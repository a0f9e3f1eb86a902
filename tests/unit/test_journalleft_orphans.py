"""runtime/orphans.py: the exited children reaped, the workers' left to their joins."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.runtime.orphans import adopts_orphans, reap_orphans
from tests.waiting import until


def _exited_child() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    until(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
          10, "the child never exited")
    return pid


def _in_a_process_of_its_own(body: Callable[[], None]) -> None:
    """`body` run in a forked process: the children `reap_orphans` waits for there are
    its own, never the test run's (another test's process, exited and not yet waited
    for: reaped here, its own wait would read no exit code)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0) == (pid, 0), "the body failed (its traceback above)"


def test_an_exited_child_not_kept_is_reaped_and_a_kept_one_is_left() -> None:
    def body() -> None:
        kept = _exited_child()
        assert kept not in reap_orphans({kept})
        assert Path(f"/proc/{kept}").exists()  # still a zombie: its own wait reads its code
        assert os.waitpid(kept, 0) == (kept, 3 << 8)
        orphan = _exited_child()
        assert orphan in reap_orphans(set())
        assert not Path(f"/proc/{orphan}").exists()
        assert reap_orphans(set()) == []  # (no child left at all)

    _in_a_process_of_its_own(body)


def test_a_process_that_is_neither_pid_1_nor_a_subreaper_adopts_none() -> None:
    assert not adopts_orphans()  # (a test run is neither)


def test_a_python_without_ctypes_still_starts_its_supervisor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(Review of journalleft.) A Python built without libffi has no ctypes (store/replaced.py
    copes the same way): the supervisor's module imports, and only PID 1 adopts orphans."""
    monkeypatch.setitem(sys.modules, "ctypes", None)  # `import ctypes` raises ImportError
    monkeypatch.delitem(sys.modules, "azure_openai_proxy.runtime.orphans")
    orphans = importlib.import_module("azure_openai_proxy.runtime.orphans")
    assert orphans.adopts_orphans() is False
