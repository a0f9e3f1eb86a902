"""Session 31 integration review: a journal writer that falls back to the thread writer
at its start queues the lines added before it as the child reads them (`JournalRecord`,
not a `RequestRecord` a line), and they are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter
from azure_openai_proxy.gateway.ledgerrows import JournalRecord
from tests.e2e.test_ledger_journal import journal
from tests.unit.test_ledger_writer import finished, stored


def test_a_journal_writer_falling_back_queues_its_lines_as_journal_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.db"
    ledger = journal(path)
    for n in range(3):
        ledger.add(finished(n))

    def refused() -> None:
        raise OSError("no child here")

    fall_back = JournalLedgerWriter._fall_back
    queued: list[object] = []

    def seen(self: JournalLedgerWriter) -> None:
        fall_back(self)
        queued.extend((record, ended) for record, ended in self._queue)

    monkeypatch.setattr(JournalLedgerWriter, "_spawn", lambda self: refused())
    monkeypatch.setattr(JournalLedgerWriter, "_fall_back", seen)
    ledger.start()  # falls back to the thread writer, the lines queued
    try:
        assert ledger._fell_back and len(queued) == 3
        assert all(type(record) is JournalRecord and type(ended) is float
                   for record, ended in queued)  # type: ignore[misc]
        ledger.flush()
        assert stored(path) == ["req-0", "req-1", "req-2"]
    finally:
        ledger.close()
