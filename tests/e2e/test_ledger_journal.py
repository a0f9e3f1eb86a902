"""The journal-fed child writer (`ledger_writer: journal`, gateway/ledgerjournal.py and
journalchild.py) with a real child process and a real SQLite file: the guarantees of
the thread writer, each with the case that breaks a naive journal."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.budgethold import reserve_budget, settle_budget
from azure_openai_proxy.gateway.journalfiles import segments
from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import Price, PriceTable
from azure_openai_proxy.store.ledger import LedgerStore
from tests.unit.test_ledger_writer import NOW, finished, stored
from tests.waiting import until

# The slow step (`.ci/run`'s `pytest --slow`): the opt-in journal writer's end-to-end
# tests start real child processes and wait on them (~1 min of the default run's wall
# time at two processes, session 29).
pytestmark = pytest.mark.slow

COST = (1000 * 2.50 + 100 * 10.00) / 1e6


def journal(path: Path, clock: list[float] | None = None, **options: int) -> JournalLedgerWriter:
    now = clock or [NOW]
    return JournalLedgerWriter(path, PriceTable.shipped(), {("https://e/", "dep"): "gpt-4o-mini"},
                               BudgetGuard(clock=lambda: now[0]), clock=lambda: now[0],
                               **options)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[JournalLedgerWriter]:
    ledger = journal(tmp_path / "gw.db")
    ledger.start()
    yield ledger
    ledger.close()


def journal_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(path.name + ".journal-*"))


def writers_of(prefix: str) -> int:
    """The processes running a child writer of the journal `prefix`."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        count += b"azure_openai_proxy.gateway.journalchild" in words and prefix.encode() in words
    return count


def test_records_reach_the_database_and_the_journal_goes_at_close(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = journal(path)
    ledger.start()
    time.sleep(0.7)  # past the thread's first cycle, which once started a second child
    assert writers_of(ledger.prefix) == 1
    for n in range(3000):  # more than a write of the event loop's, and a batch
        ledger.add(finished(n, key_id="k1"))
    assert ledger.flush()
    assert len(stored(path)) == 3000
    assert ledger.child_alive()
    ledger.close()
    assert journal_files(path) == []  # written, then removed
    assert len(stored(path)) == 3000


def test_a_quiet_gateways_last_records_reach_the_database_within_a_second(
    started: JournalLedgerWriter,
) -> None:
    """Fewer records than one append of the event loop's: the thread's timer appends
    them; nobody calls flush."""
    until(lambda: stored(started.database) == [] and started.child_alive(), 10)
    started.add(finished(1))
    # 0.5 s by design (the thread's cycle, then the child poked); the wait only bounds
    # a hang on a loaded machine: without the timer it is never written before close
    until(lambda: stored(started.database) == ["req-1"], 10, "never written", interval=0.05)


def test_close_writes_everything_without_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = journal(path)
    ledger.start()
    for n in range(700):
        ledger.add(finished(n))
    ledger.close()  # what SIGTERM does (the app's cleanup)
    assert len(stored(path)) == 700
    assert journal_files(path) == []


def test_no_line_holds_a_prompt_or_a_secret(started: JournalLedgerWriter) -> None:
    record = finished(1, key_id="key-id-1", team_id="team-1", error="secret-error-text",
                      azure_request_id="azure-id-xyz", created_id="created-xyz")
    record.retries = ["retry-xyz"]
    started.add(record)
    assert started.flush()
    text = b"".join(p.read_bytes() for p in started.database.parent.glob("gw.db.journal-*.0*"))
    assert b"key-id-1" in text and b"req-1" in text
    for absent in (b"secret-error-text", b"azure-id-xyz", b"created-xyz", b"retry-xyz", b"POST"):
        assert absent not in text


def test_a_killed_child_is_started_again_and_resumes_without_loss_or_double(
    started: JournalLedgerWriter,
) -> None:
    for n in range(1000):
        started.add(finished(n))
    assert started.flush()
    first = started.child_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for n in range(1000, 2500):
        started.add(finished(n))
    assert started.flush(30)
    assert started.child_pid not in (None, first)
    assert stored(started.database) == sorted(f"req-{n}" for n in range(2500))


def test_a_reload_prices_later_records_with_its_prices(started: JournalLedgerWriter) -> None:
    started.add(finished(1))
    started.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
    started.add(finished(2))
    assert started.flush()
    store = LedgerStore.open(started.database)
    try:
        costs = {r.request_id: r.cost_usd for r in store.records()}
    finally:
        store.close()
    assert costs["req-1"] == pytest.approx(COST)
    assert costs["req-2"] == pytest.approx(1100 * 1000.0 / 1e6)


def test_a_child_restarted_mid_segment_keeps_the_reloads_prices(
    started: JournalLedgerWriter,
) -> None:
    """The prices in force at the acknowledged offset are read again from the segment."""
    started.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
    started.add(finished(1))
    assert started.flush()
    child = started.child_pid
    assert child is not None
    os.kill(child, signal.SIGKILL)
    started.add(finished(2))
    assert started.flush(30)
    store = LedgerStore.open(started.database)
    try:
        costs = {r.request_id: r.cost_usd for r in store.records()}
    finally:
        store.close()
    assert costs["req-2"] == pytest.approx(1100 * 1000.0 / 1e6)


def test_a_locked_database_keeps_the_records_in_the_journal_until_it_is_back(
    started: JournalLedgerWriter,
) -> None:
    started.flush()
    lock = sqlite3.connect(started.database, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        for n in range(600):
            started.add(finished(n))
        assert not started.flush(3)  # not written: the database refuses
        assert started.journal_bytes() > 600 * 100
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert started.flush(30)
    assert len(stored(started.database)) == 600


def test_segments_are_rotated_and_removed_once_written(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = journal(path, segment_bytes=60_000)
    ledger.start()
    for n in range(2000):  # ~250 bytes a line (and the prices' first): some 10 segments
        ledger.add(finished(n))
    assert ledger.flush()
    left = segments(ledger.prefix)
    assert len(left) <= 2 and left[-1] >= 5  # rotated, and the written ones removed
    assert len(stored(path)) == 2000
    ledger.close()


def test_past_the_bound_records_wait_in_memory_then_the_oldest_are_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.db"
    clock = [NOW]
    ledger = journal(path, clock, journal_max_bytes=1, max_buffer=50)
    guard = ledger.guard
    ledger.start()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        until(lambda: ledger.journal_full, 5, "the bound never seen")
        key = VirtualKey(id="k1", name="k", secret_hash="-", prefix="sk-aop-",
                         limits=Limits(budget_usd=100.0, budget_period="daily"))
        for n in range(120):
            record = finished(n, key_id="k1")
            settle_budget(guard, reserve_budget(guard, Caller(None, key), {"max_tokens": 10},
                                                ("gpt-4o",)), record)
            ledger.add(record)
        until(lambda: ledger.waiting <= 50, 5, "nothing dropped past max_buffer")
        assert guard.held(("key", "k1")) == pytest.approx(50 * COST)  # the dropped let go
    finally:
        lock.execute("COMMIT")
        lock.close()
    ledger.close()  # the 50 kept in memory: appended past the bound, and written
    assert ledger.dropped == 70
    assert len(stored(path)) == 50


def test_the_budgets_follow_the_records_written(tmp_path: Path) -> None:
    clock = [NOW]
    ledger = journal(tmp_path / "gw.db", clock)
    guard = ledger.guard
    ledger.start()
    limited = VirtualKey(id="k1", name="k", secret_hash="-", prefix="sk-aop-", team_id="t1",
                         limits=Limits(budget_usd=100.0, budget_period="daily"))
    record = finished(1, key_id="k1", team_id="t1")
    settle_budget(guard, reserve_budget(guard, Caller(None, limited), {"max_tokens": 10},
                                        ("gpt-4o",)), record)
    ledger.add(record)
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(COST)
    clock[0] += 3
    assert ledger.flush()
    assert guard.book.spent(("key", "k1"), "") == pytest.approx(COST)
    assert guard.held(("key", "k1")) == 0.0
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(COST)  # counted once
    ledger.close()


_CRASHING_WORKER = """
import sys
from pathlib import Path
from tests.e2e.test_ledger_journal import journal
from tests.unit.test_ledger_writer import finished
ledger = journal(Path(sys.argv[1]))
ledger.start()
for n in range(800):
    ledger.add(finished(n))
ledger.flush(0.1)  # appended; not written (the database is locked)
print("appended", flush=True)
sys.stdin.read()  # killed here
"""


def test_a_killed_workers_journal_is_written_by_the_next_start(tmp_path: Path) -> None:
    """The worker and its child killed together (SIGKILL to their process group): the
    journal stays, its lock free; the next worker's child claims and writes it."""
    path = tmp_path / "gw.db"
    LedgerStore.open(path).close()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # its child writes nothing before the kill
    worker = subprocess.Popen([sys.executable, "-c", _CRASHING_WORKER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              start_new_session=True, cwd=Path(__file__).parents[2])
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"appended\n"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    lock.execute("COMMIT")
    lock.close()
    left = journal_files(path)
    assert any(name.endswith(".lock") for name in left)
    assert stored(path) == []
    successor = journal(path)
    successor.start()
    try:
        until(lambda: len(stored(path)) == 800, 30, "the dead worker's journal not written")
        until(lambda: not set(left) & set(journal_files(path)), 10, "its files not removed")
    finally:
        successor.close()


def test_a_line_that_cannot_be_priced_is_set_aside_and_stops_nothing(
    started: JournalLedgerWriter,
) -> None:
    """A journal line of valid JSON whose usage is no mapping (hand-edited, or damaged in
    a way JSON still reads): set aside beside the database, the records after it written
    (a child that died on it would die again at each restart, the journal growing)."""
    started.add(finished(1))
    assert started.flush()
    segment = started.database.parent / f"{Path(started.prefix).name}.{1:06d}"
    with open(segment, "ab") as file:
        file.write(b'["req-bad", 1.0, 5.0, null, 200, 1, false, null, null, "gpt-4o", "dep",'
                   b' "https://e/", "chat/completions", [1, 2]]\n')
        file.write(b'["req-cut", 1.0\n')
    for n in range(2, 5):
        started.add(finished(n))
    assert started.flush(20)
    assert stored(started.database) == ["req-1", "req-2", "req-3", "req-4"]
    refused = started.database.with_name("gw.db.journal-refused.jsonl").read_bytes()
    assert b"req-bad" in refused and b"req-cut" in refused
    assert started.child_alive()


def test_a_killed_workers_own_child_writes_its_journal_and_goes(tmp_path: Path) -> None:
    """The worker alone killed: its child sees its input end, writes what the journal
    holds, removes it and exits (the journal's lock then free for nobody to need)."""
    path = tmp_path / "gw.db"
    LedgerStore.open(path).close()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    worker = subprocess.Popen([sys.executable, "-c", _CRASHING_WORKER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              cwd=Path(__file__).parents[2])
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"appended\n"
        prefix = next(p for p in journal_files(path) if p.endswith(".lock"))[:-len(".lock")]
        assert writers_of(str(tmp_path / prefix)) == 1
    finally:
        worker.kill()  # the worker only: its child lives on
        worker.wait()
    lock.execute("COMMIT")
    lock.close()
    until(lambda: len(stored(path)) == 800, 30, "the orphaned child did not write it")
    until(lambda: journal_files(path) == [], 10, "the journal not removed")
    until(lambda: writers_of(str(tmp_path / prefix)) == 0, 10, "the child did not exit")


def test_a_segment_that_cannot_be_made_raises_nothing_into_the_request(
    tmp_path: Path,
) -> None:
    """The next segment cannot be made (here a directory stands at its name): `add`, on
    the event loop, raises nothing, the lines go on into the current segment, and the
    next append past the size tries again."""
    path = tmp_path / "gw.db"
    ledger = journal(path, segment_bytes=40_000)
    ledger.start()
    try:
        blocker = Path(f"{ledger.prefix}.{2:06d}")
        blocker.mkdir()
        for n in range(600):  # past 40,000 bytes at an append of the loop's
            ledger.add(finished(n))
        assert ledger.flush()
        assert len(stored(path)) == 600
        blocker.rmdir()
        for n in range(600, 1200):
            ledger.add(finished(n))
        assert ledger.flush()
        assert len(stored(path)) == 1200
        assert segments(ledger.prefix)[-1] >= 2
    finally:
        ledger.close()


def test_pokes_to_a_stopped_child_never_block_the_worker(started: JournalLedgerWriter) -> None:
    child = started.child_pid
    assert child is not None
    os.kill(child, signal.SIGSTOP)
    try:
        for _ in range(70_000):  # more bytes than a pipe holds
            started._poke()
        started.add(finished(1))
        assert not started.flush(0.5)
    finally:
        os.kill(child, signal.SIGCONT)
    assert started.flush(20)
    assert stored(started.database) == ["req-1"]


def test_a_journal_that_cannot_be_made_falls_back_to_the_thread_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The journal's lock file cannot be made (a directory stands at its name): the
    gateway starts all the same, writing with the thread writer, an error logged; the
    records and the reload added before the start are written with their prices."""
    from azure_openai_proxy.gateway import ledgerjournal

    path = tmp_path / "gw.db"
    monkeypatch.setattr(ledgerjournal.secrets, "token_hex", lambda _: "blocked0")
    Path(f"{path}.journal-{os.getpid()}-blocked0.lock").mkdir()
    ledger = journal(path)
    ledger.add(finished(0))
    ledger.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
    ledger.add(finished(1))
    ledger.start()
    try:
        for n in range(2, 300):
            ledger.add(finished(n))
        assert ledger.flush(10)
        assert len(stored(path)) == 300
        store = LedgerStore.open(path)
        try:
            costs = {r.request_id: r.cost_usd for r in store.records()}
        finally:
            store.close()
        assert costs["req-0"] == pytest.approx(COST)
        assert costs["req-1"] == pytest.approx(1100 * 1000.0 / 1e6)
        assert "falls back to the thread writer" in caplog.text
    finally:
        ledger.close()
    assert len(stored(path)) == 300


def test_a_child_that_cannot_be_started_falls_back_to_the_thread_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "gw.db"
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    ledger = journal(path)
    ledger.start()
    try:
        for n in range(300):
            ledger.add(finished(n))
        assert ledger.flush(10)
        assert len(stored(path)) == 300
        assert journal_files(path) == []  # nothing left waiting for a child
    finally:
        ledger.close()


def test_the_childs_database_failures_are_counted_in_the_workers_failures(
    started: JournalLedgerWriter,
) -> None:
    started.flush()
    assert started.failures == 0
    lock = sqlite3.connect(started.database, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started.add(finished(1))
        started.flush(0.1)  # appended and poked
        until(lambda: started.failures > 0, 20, "the child's refusals never counted")
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert started.flush(30)
    assert stored(started.database) == ["req-1"]


def test_a_claim_while_a_worker_starts_never_takes_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another worker's child claims dead workers' journals by their free locks: one
    looking while this worker has made its lock file but not yet locked it must not
    find it free (it removed the lock file: this journal, unlocked on disk, would never
    be claimed after a crash of its worker)."""
    import fcntl

    from azure_openai_proxy.gateway.journalchild import Ledger, claim_dead_journals

    path = tmp_path / "gw.db"
    LedgerStore.open(path).close()
    real = fcntl.flock

    def claimed_first(fd: int, operation: int) -> None:  # the worker's first lock
        monkeypatch.setattr(fcntl, "flock", real)
        claim_dead_journals(path, f"{path}.journal-another", Ledger(path, 1000))
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", claimed_first)
    ledger = journal(path)
    ledger.start()
    try:
        fd = os.open(ledger.prefix + ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                real(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: the worker lives
        finally:
            os.close(fd)
        ledger.add(finished(1))
        assert ledger.flush()
    finally:
        ledger.close()
    assert stored(path) == ["req-1"]


def test_a_child_restarted_in_a_later_segment_prices_with_the_reloads_prices(
    tmp_path: Path,
) -> None:
    """A reload, then segments rotated past it: a child started again in a later segment
    finds the prices in force in that segment's first line (else: the shipped ones)."""
    path = tmp_path / "gw.db"
    ledger = journal(path, segment_bytes=40_000)
    ledger.start()
    try:
        ledger.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
        for n in range(600):  # some 4 segments after the reload's line
            ledger.add(finished(n))
        assert ledger.flush()
        assert segments(ledger.prefix)[0] >= 2
        child = ledger.child_pid
        assert child is not None
        os.kill(child, signal.SIGKILL)
        until(lambda: ledger.child_pid != child and ledger.child_alive(), 20,
              "the child was not started again")
        ledger.add(finished(600))
        assert ledger.flush(20)
        store = LedgerStore.open(path)
        try:
            costs = {r.request_id: r.cost_usd for r in store.records()}
        finally:
            store.close()
        assert costs["req-600"] == pytest.approx(1100 * 1000.0 / 1e6)
    finally:
        ledger.close()


def test_a_stop_just_after_the_child_died_still_writes_everything(tmp_path: Path) -> None:
    """The child killed and the worker stopped before its thread started another: the
    stop starts one to write the journal (else the records wait for a next start)."""
    path = tmp_path / "gw.db"
    ledger = journal(path)
    ledger.start()
    ledger.add(finished(1))
    assert ledger.flush()
    child = ledger.child_pid
    assert child is not None
    os.kill(child, signal.SIGKILL)
    until(lambda: not ledger.child_alive(), 10, "the child did not die")
    ledger.add(finished(2))
    ledger.close()
    assert stored(path) == ["req-1", "req-2"]
    assert journal_files(path) == []


def test_a_never_started_writer_whose_journal_cannot_be_made_writes_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`close` starts a writer never started that holds records (a command's): the
    fallback to the thread writer then, too, writes them."""
    from azure_openai_proxy.gateway import ledgerjournal

    path = tmp_path / "gw.db"
    monkeypatch.setattr(ledgerjournal.secrets, "token_hex", lambda _: "blocked0")
    Path(f"{path}.journal-{os.getpid()}-blocked0.lock").mkdir()
    ledger = journal(path)
    ledger.add(finished(1))
    ledger.close()
    assert stored(path) == ["req-1"]


def test_a_child_whose_pipe_cannot_be_set_up_is_stopped_at_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(fd: int, blocking: bool) -> None:
        raise OSError("refused for the test")

    path = tmp_path / "gw.db"
    monkeypatch.setattr(os, "set_blocking", refused)
    ledger = journal(path)
    ledger.start()
    monkeypatch.undo()
    try:
        assert writers_of(ledger.prefix) == 0  # no child left tailing a journal gone
        ledger.add(finished(1))
        assert ledger.flush()
        assert stored(path) == ["req-1"]
    finally:
        ledger.close()
