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


def test_a_journal_that_cannot_be_acknowledged_at_the_stop_is_kept_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk full as `close` reads the journal's last records (their acknowledgement
    cannot be written): `close` (app.cleanup's: the transport, the key directory and the
    owners' store are closed after it) does not raise, and the journal stays (its lock
    let go) for a later claim, which counts the committed records once."""
    from azure_openai_proxy.gateway import journalchild

    path = tmp_path / "gw.db"
    ledger = _taken_over(path, monkeypatch, tmp_path)
    until(lambda: _rows(path)[0] == 300, 30, "never written")
    maintain = ledger._maintain

    def full(prefix: str, position: tuple[int, int]) -> None:
        raise OSError(28, "No space left on device")

    def maintain_then_add() -> None:
        maintain()
        if ledger._stopping and ledger._thread is None:
            monkeypatch.setattr(journalchild, "write_ack", full)
            ledger.add(finished(999))

    monkeypatch.setattr(ledger, "_maintain", maintain_then_add)
    ledger.close()  # (raised OSError)
    assert _rows(path) == (301, 301)  # committed, then not acknowledged
    assert journal_files(path) != []  # kept: a later claim writes it again, counted once


def test_a_worker_that_took_over_claims_dead_workers_journals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its child no longer claims them: its thread does (`_own_journal`). Seen surviving a
    mutation before (no claim by a taken-over worker: no test failed)."""
    from tests.unit.test_journalleft_claims import _dead_journal

    path = tmp_path / "gw.db"
    ledger = _taken_over(path, monkeypatch, tmp_path)
    try:
        until(lambda: _rows(path)[0] == 300, 30, "never written")
        _dead_journal(path, "1-dead0000", range(1000, 1100))
        until(lambda: _rows(path)[0] == 400, 30, "the dead journal was never claimed")
        assert ledger.in_process  # (no child came back meanwhile: its retry is 120 s away)
    finally:
        ledger.close()
    assert _rows(path) == (400, 400)
    assert journal_files(path) == []
