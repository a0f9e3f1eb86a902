"""The journal's take-over by its worker (gateway/ledgerjournal.py `_take_over`) and the
child's supervision (gateway/ledgersupervise.py), session 31: a large journal read in
bounded pieces; deaths of an idle child not counted as a crash loop; a taken-over worker
trying its child again later. Real child processes, really killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import tracemalloc
from functools import partial
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter
from tests.e2e.test_ledger_journal import journal, journal_files
from tests.unit.test_ledger_writer import finished
from tests.waiting import until

pytestmark = pytest.mark.slow  # (as test_ledger_journal.py: child processes, waits)


def _rows(path: Path) -> tuple[int, int]:
    """The raw rows and the requests the rollups count (no list of ids: the memory
    measured below would count it)."""
    with sqlite3.connect(path) as db:
        rows = int(db.execute("SELECT count(*) FROM usage_records").fetchone()[0])
        rolled = db.execute("SELECT sum(requests) FROM usage_rollups WHERE kind = 'model'"
                            ).fetchone()[0]
    return rows, int(rolled or 0)


_JOURNAL = 12 << 20  # bytes


def _one_written(path: Path) -> JournalLedgerWriter:
    """A journal writer started, a record written by its child."""
    ledger = journal(path)
    ledger.start()
    try:
        ledger.add(finished(0))
        assert ledger.flush(30)
    except BaseException:
        ledger.close()
        raise
    return ledger


def _restarted(ledger: JournalLedgerWriter, old: int) -> bool:
    return ledger.child_pid not in (None, old) and ledger.child_alive()


def _crash_loop(ledger: JournalLedgerWriter, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> None:
    """The child killed and no longer startable: after three deaths with records
    waiting, the worker's thread takes the journal over."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    child = ledger.child_pid
    assert child is not None
    os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(300)  # (~85,000 records written under tracemalloc on a busy machine)
def test_a_large_journal_taken_over_is_read_in_pieces_not_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """~12 MB of journal left unwritten (the child stopped), then a crash loop: the
    worker writes it all, once, holding a bounded piece of it in memory at a time (the
    child's reader's: 4 MB read, sliced and split, ~15 MiB at the peak whatever the
    journal's size). Before, it read the whole of it and queued every line: 77 MiB."""
    path = tmp_path / "gw.db"
    ledger = _one_written(path)
    try:
        child = ledger.child_pid
        assert child is not None
        os.kill(child, signal.SIGSTOP)  # writes nothing from now on
        count = 1
        while ledger.journal_bytes() < _JOURNAL:
            for n in range(count, count + 10_000):
                ledger.add(finished(n))
            count += 10_000
            until(lambda: ledger.waiting < 256, 30, "never appended")
        until(lambda: ledger.waiting == 0, 30, "never appended")
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            _crash_loop(ledger, monkeypatch, tmp_path)
            until(lambda: _rows(path)[0] == count, 240, "never written")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert ledger.in_process
        assert peak < 20 << 20, f"{peak / 2**20:.1f} MiB at the take-over's peak"
    finally:
        ledger.close()
    assert _rows(path) == (count, count)
    assert journal_files(path) == []


def test_a_child_dying_while_nothing_waits_is_started_again_not_given_up(
    tmp_path: Path,
) -> None:
    """An idle gateway's child killed four times (the OOM killer, an operator): each is
    started again; none is a crash loop, and the records after go through a child."""
    path = tmp_path / "gw.db"
    ledger = _one_written(path)
    try:
        for _ in range(4):
            child = ledger.child_pid
            assert child is not None
            os.kill(child, signal.SIGKILL)
            until(partial(_restarted, ledger, child), 40, "the child was not started again")
        assert not ledger.in_process and ledger.fallbacks == 0
        ledger.add(finished(1))
        assert ledger.flush()
        assert _rows(path) == (2, 2)
    finally:
        ledger.close()


def test_a_worker_that_took_over_tries_its_child_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure_openai_proxy.gateway import ledgersupervise

    monkeypatch.setattr(ledgersupervise, "_RETRY_FIRST", 1.0, raising=False)
    path = tmp_path / "gw.db"
    ledger = _one_written(path)
    python = sys.executable
    try:
        _crash_loop(ledger, monkeypatch, tmp_path)
        for n in range(1, 300):  # waiting for a child: its deaths count
            ledger.add(finished(n))
        until(lambda: ledger.in_process, 30, "never taken over")
        until(lambda: _rows(path)[0] == 300, 30, "never written")
        monkeypatch.setattr(sys, "executable", python)  # a child can run again
        until(lambda: not ledger.in_process and ledger.child_alive(), 30,
              "the child was never tried again")
        child = ledger.child_pid
        for n in range(300, 600):
            ledger.add(finished(n))
        assert ledger.flush()
        assert ledger.child_pid == child and not ledger.in_process
        assert ledger.fallbacks == 1
    finally:
        ledger.close()
    assert _rows(path) == (600, 600)
    assert journal_files(path) == []
