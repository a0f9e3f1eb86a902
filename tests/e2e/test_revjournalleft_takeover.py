"""Review of journalleft (session 31): a worker that took its journal over loses no
record added while it stops (gateway/ledgerjournal.py `close`). A record added after
the thread's last pass (a request finishing while `app.cleanup` closes the ledger) is
appended by `close`, as it is when a child writes the journal: the taken-over worker
then reads the journal to its end, after that append. Before, the thread's last pass
closed the journal, and such a record stayed in memory, lost. Real child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter
from tests.e2e.test_journalleft_takeover import _crash_loop, _one_written, _rows
from tests.e2e.test_ledger_journal import journal_files
from tests.unit.test_ledger_writer import finished, stored
from tests.waiting import until

pytestmark = pytest.mark.slow  # (as test_journalleft_takeover.py: child processes, waits)


def _taken_over(path: Path, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> JournalLedgerWriter:
    ledger = _one_written(path)
    try:
        _crash_loop(ledger, monkeypatch, tmp_path)
        for n in range(1, 300):  # waiting for a child: its deaths count
            ledger.add(finished(n))
        until(lambda: ledger.in_process, 30, "never taken over")
    except BaseException:
        ledger.close()
        raise
    return ledger


def test_a_record_added_after_the_threads_last_pass_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "gw.db"
    ledger = _taken_over(path, monkeypatch, tmp_path)
    maintain = ledger._maintain
    late: list[int] = []

    def maintain_then_add() -> None:
        maintain()
        if ledger._stopping and ledger._thread is None and not late:
            late.append(1)  # (close's own pass, the thread ended: added after its last)
            ledger.add(finished(999))

    monkeypatch.setattr(ledger, "_maintain", maintain_then_add)
    ledger.close()
    assert late
    assert "req-999" in stored(path)
    assert _rows(path) == (301, 301)
    assert journal_files(path) == []
