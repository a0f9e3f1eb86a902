"""Review of the journal child's take-over (gateway/ledgerjournal.py `_take_over`, session
30): a worker killed while the lines it took over wait in its memory loses none; a child
that dies while it makes progress is not a crash loop; the stop's hand-over stops the
child; the failures counter never goes down. Real children, really killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import PriceTable
from tests.e2e.test_ledger_journal import journal, journal_files, writers_of
from tests.e2e.test_ledger_journal_takeover import _rollup_requests
from tests.unit.test_ledger_writer import NOW, finished, stored, writer
from tests.waiting import until

pytestmark = pytest.mark.slow  # (as test_ledger_journal.py: child processes, waits)

# A worker: 200 records written by its child, then (the database locked by the test and
# its spool path a directory: nothing can take the records but memory) 800 more, its
# child killed and no longer startable: the crash loop's take-over (which, until session
# 31, held them in memory; since, reads them from the journal, which keeps them).
_WORKER = """
import sys, time
from pathlib import Path
from tests.e2e.test_ledger_journal import journal
from tests.unit.test_ledger_writer import finished
ledger = journal(Path(sys.argv[1]))
ledger.start()
for n in range(200):
    ledger.add(finished(n))
assert ledger.flush()
print("written", flush=True)
sys.stdin.readline()  # the database locked
for n in range(200, 1000):
    ledger.add(finished(n))
ledger._write_lines(block=True)
sys.executable = "/nonexistent/python"
import os, signal
os.kill(ledger.child_pid, signal.SIGKILL)
deadline = time.monotonic() + 60
while not ledger.in_process and time.monotonic() < deadline:
    time.sleep(0.05)
failures = ledger.failures
while ledger.failures == failures and time.monotonic() < deadline:
    time.sleep(0.05)  # (its thread's reading of the journal, refused by the lock)
time.sleep(0.5)
print("taken over" if ledger.in_process else "not taken over", flush=True)
time.sleep(600)
"""


def test_a_worker_killed_after_taking_its_journal_over_loses_no_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.db"
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    assert worker.stdin is not None and worker.stdout is not None
    lock = sqlite3.connect(path, isolation_level=None)
    spool = path.with_name(path.name + ".spool.jsonl")
    try:
        assert worker.stdout.readline().strip() == "written"
        spool.mkdir()  # the spool cannot be written either
        lock.execute("BEGIN EXCLUSIVE")
        worker.stdin.write("go\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "taken over"
        worker.kill()  # a crash (SIGKILL) of the worker
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if lock.in_transaction:
            lock.execute("COMMIT")
        lock.close()
    spool.rmdir()
    dead = journal_files(path)
    assert dead != []  # the records are still on disk: the journal
    after = journal(path)  # the next start: its child claims the dead worker's journal
    after.start()
    try:
        until(lambda: len(stored(path)) == 1000, 60, "the taken-over records were lost")
        # Its files go after its rows commit: waited for here, since a stop that comes
        # between the two (close() kills the child) leaves them to the next start.
        until(lambda: not set(dead) & set(journal_files(path)), 30,
              "the dead worker's journal was not removed")
    finally:
        after.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(1000))
    assert journal_files(path) == []


def test_a_child_dying_while_it_makes_progress_is_started_again_not_given_up(
    tmp_path: Path,
) -> None:
    """Three deaths, the acknowledgement moving between them: no crash loop."""
    ledger = journal(tmp_path / "gw.db")
    ledger.start()
    try:
        for death in range(3):
            for n in range(death * 100, death * 100 + 100):
                ledger.add(finished(n))
            assert ledger.flush(30)  # written by a child: the acknowledgement moved
            pid = ledger.child_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            until(lambda killed=pid: ledger.child_pid not in (None, killed)  # type: ignore[misc]
                  and ledger.child_alive(), 30, "the child was not started again")
        ledger.add(finished(300))
        assert ledger.flush(30)
        assert not ledger.in_process and ledger.fallbacks == 0 and ledger.restarts == 3
    finally:
        ledger.close()
    assert len(stored(ledger.database)) == 301


class _Counted(JournalLedgerWriter):
    """Every value `failures` takes, kept (what a scrape may read at any moment)."""

    seen: list[int]

    @property  # type: ignore[override]
    def failures(self) -> int:
        return self.__dict__.get("_failures", 0)

    @failures.setter
    def failures(self, value: int) -> None:
        self.__dict__.setdefault("seen", []).append(value)
        self.__dict__["_failures"] = value


def test_the_stop_stops_the_child_and_the_failures_counter_never_goes_down(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.db"
    ledger = _Counted(path, PriceTable.shipped(), {("https://e/", "dep"): "gpt-4o-mini"},
                      BudgetGuard(clock=lambda: NOW), clock=lambda: NOW)
    ledger.start()
    for n in range(300):
        ledger.add(finished(n))
    assert ledger.flush(30)
    for n in range(300, 600):
        ledger.add(finished(n))
    child = ledger.child_pid
    prefix = ledger.prefix
    started = time.monotonic()
    ledger.close()
    assert ledger.in_process  # the stop's hand-over: the thread wrote the rest
    assert ledger.child_pid is None and child is not None  # the child stopped, not waited for
    assert writers_of(prefix) == 0
    assert time.monotonic() - started < 20
    assert stored(path) == sorted(f"req-{n}" for n in range(600))
    seen = ledger.__dict__.get("seen", [0])
    assert seen == sorted(seen), seen  # a counter: a scrape between never sees it drop
    assert ledger.failures == 0


def test_an_upgrade_from_the_thread_writer_writes_its_spool_with_the_journal_writer(
    tmp_path: Path,
) -> None:
    """`ledger_writer`'s default flipped (session 30): a spool the thread writer left (its
    database locked at its stop) is replayed by the journal writer's start, once."""
    path = tmp_path / "gw.db"
    old = writer(path)
    old.start()
    old.add(finished(0))
    assert old.flush()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        for n in range(1, 300):
            old.add(finished(n))
        old.close()
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert old.spool_path.exists() and stored(path) == ["req-0"]
    new = journal(path)
    new.start()
    try:
        new.add(finished(300))
        until(lambda: len(stored(path)) == 301 and not new.spool_path.exists(), 30,
              "the thread writer's spool was not replayed")
    finally:
        new.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(301))
    assert _rollup_requests(path) == 301
