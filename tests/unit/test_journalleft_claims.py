"""A thread writer (`ledger_writer: thread`) writes a dead worker's journal left beside
its database, once, and removes it (gateway/ledger.py `_claim_dead`, session 31: none
did before, so a switch from `journal` to `thread` left a crashed worker's records out)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from azure_openai_proxy.gateway.journalfiles import prices_line, record_line, segment_path
from azure_openai_proxy.governance.prices import PriceTable
from tests.unit.test_ledger_writer import NOW, finished, stored, writer
from tests.waiting import until


def _dead_journal(database: Path, name: str, numbers: range) -> str:
    prefix = f"{database}.journal-{name}"
    Path(prefix + ".lock").touch()  # (no process holds it: a dead worker's)
    lines = [prices_line(PriceTable.shipped(), {}), *(
        record_line(finished(n), NOW) for n in numbers)]
    segment_path(prefix, 1).write_bytes(b"\n".join(lines) + b"\n")
    return prefix


def test_a_thread_writer_writes_a_dead_workers_journal_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    dead = _dead_journal(path, "1-dead0000", range(300))
    ledger = writer(path)
    ledger.start()
    try:
        ledger.add(finished(300))
        until(lambda: len(stored(path)) == 301, 20, "the dead journal was never written")
        until(lambda: not list(tmp_path.glob("gw.db.journal-*")), 10, "it was not removed")
    finally:
        ledger.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(301))
    assert not Path(dead + ".lock").exists()


def test_a_live_workers_journal_is_left_to_it(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    live = _dead_journal(path, "2-live0000", range(5))
    held = os.open(live + ".lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # its worker (or child) alive
    ledger = writer(path)
    ledger.start()
    try:
        ledger.add(finished(9))
        assert ledger.flush()
        ledger._next_claim = 0.0  # (a claim due now)
        assert ledger.flush()
        assert stored(path) == ["req-9"]
        assert segment_path(live, 1).exists()
    finally:
        ledger.close()
        os.close(held)
