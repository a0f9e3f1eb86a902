"""runtime/orphans.py: the exited children reaped, the workers' left to their joins."""

from __future__ import annotations

import os
from pathlib import Path

from azure_openai_proxy.runtime.orphans import adopts_orphans, reap_orphans
from tests.waiting import until


def _exited_child() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    until(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
          10, "the child never exited")
    return pid


def test_an_exited_child_not_kept_is_reaped_and_a_kept_one_is_left() -> None:
    kept = _exited_child()
    assert kept not in reap_orphans({kept})
    assert Path(f"/proc/{kept}").exists()  # still a zombie: its own wait reads its code
    assert os.waitpid(kept, 0) == (kept, 3 << 8)
    orphan = _exited_child()
    assert orphan in reap_orphans(set())
    assert not Path(f"/proc/{orphan}").exists()


def test_a_process_that_is_neither_pid_1_nor_a_subreaper_adopts_none() -> None:
    assert not adopts_orphans()  # (a test run is neither)
