"""Session 31 integration review: the journal writer's flush (its child's commit, then
the thread's pass) returns well before the writer's 0.5 s timer, the records in the
database."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.test_ledger_journal import journal
from tests.unit.test_ledger_writer import finished, stored


def test_a_journal_writers_flush_returns_well_before_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = journal(path, interval=2)  # (0.5 s by default: 2 s, a busy machine's margin)
    ledger.start()
    try:
        assert ledger.flush()  # the child up, the thread idle on its timer
        time.sleep(0.1)
        for n in range(3):
            ledger.add(finished(n))
        began = time.monotonic()
        assert ledger.flush()
        took = time.monotonic() - began
        assert stored(path) == ["req-0", "req-1", "req-2"]
        assert took < 1.0, took
    finally:
        ledger.close()
