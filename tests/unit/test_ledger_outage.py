"""The usage ledger through an outage, with real SQLite files: what a crash leaves in
the spool, a report asked while the database is gone, the UTC day at its last instant."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sqlite3
import sys
import threading
import time
import tracemalloc
from collections import Counter, deque
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.ledgerrows import RowPricer
from azure_openai_proxy.gateway.ledgerspool import LedgerSpool
from azure_openai_proxy.gateway.requestids import request_id_source as _request_id_source
from azure_openai_proxy.governance.budget import day_of
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.store.ledger import LedgerRow, LedgerStore, row_of
from azure_openai_proxy.store.usage_report import read_usage
from tests.e2e.test_ledger_journal import journal
from tests.unit.test_ledger_store import record, rollups
from tests.unit.test_ledger_writer import NOW, finished, stored, writer


def test_an_append_after_a_line_cut_by_a_crash_loses_none_of_its_records(tmp_path: Path) -> None:
    """A worker killed mid-append leaves a line without its newline; the next append
    (this worker's after a restart, or another's) starts on a line of its own, so its
    first record is not glued to the cut one and skipped with it."""
    path = tmp_path / "gw.db"
    first = writer(path, batch_size=5, max_buffer=10)
    for n in range(25):  # past the bound: the oldest go to the spool
        first.add(finished(n))
    spooled = first.spool_path.read_bytes()
    cut = spooled.count(b"\n") - 1  # req-0 to req-17 spooled: req-17's line is cut
    assert cut == 17 and first.waiting == 7
    first.spool_path.write_bytes(spooled[:-20])  # by a crash
    second = writer(path, batch_size=5, max_buffer=10)
    for n in range(100, 125):
        second.add(finished(n))
    second.start()
    second.close()
    # the second's oldest went to the spool after the cut line: all in (the first's
    # queue died with it)
    assert stored(path) == sorted([f"req-{n}" for n in range(cut)]
                                  + [f"req-{n}" for n in range(100, 125)])


def test_a_usage_report_asked_while_the_database_is_gone_does_not_make_an_empty_one(
        tmp_path: Path) -> None:
    """The writer spools while its database is gone rather than make an empty one in
    its place (the budgets would read no spend from it, and a restore over it would lose
    what it took). GET /admin/usage (or the `usage` command) must not make one either:
    it fails (a 503 for the admin API) and the records keep going to the spool."""
    path = tmp_path / "gw.db"
    ledger = writer(path)
    ledger.add(finished(1))
    ledger.start()  # opens the database and writes req-1
    try:
        for name in ("gw.db", "gw.db-wal", "gw.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        for n in (2, 3):
            ledger.add(finished(n))
            assert ledger.flush()
            with pytest.raises(sqlite3.Error):
                read_usage(path, "key", 0.0, None)
            assert not path.exists()
    finally:
        ledger.close()
    assert len(ledger.spool_path.read_bytes().splitlines()) == 2


def test_a_database_there_at_the_start_and_gone_before_the_first_open_is_not_made_anew(
        tmp_path: Path) -> None:
    """The worker's side of the journal writer (the default) opens the database only
    for its maintenance, not at its start: a database that was there when the writer
    was made and is gone (its directory removed) before that first open spools, as one
    gone after an open does, rather than an empty one made in its place."""
    data = tmp_path / "data"
    path = data / "gw.db"
    LedgerStore.open(path).close()
    ledger = journal(path)
    shutil.rmtree(data)
    ledger.add(finished(1))
    ledger.start()
    try:
        ledger.flush(timeout=1.0)  # its maintenance's open has run by then
        assert not path.exists()
    finally:
        ledger.close()
    assert not path.exists()


# 2026-12-02's last half millisecond: SQLite's date(time, 'unixepoch') rounds to the
# millisecond (2026-12-03), the writer's day (budget.day_of) does not
_LAST_INSTANT = 1_796_256_000.0 - 0.0003


@pytest.mark.parametrize("replayed", [False, True])
def test_a_record_at_a_days_last_instant_is_of_that_day_in_rollups_and_reports(
        tmp_path: Path, replayed: bool) -> None:
    """The rollups (what budgets read) and `usage --by day` put a record on one UTC day,
    whichever path summed it (`replayed`: a spool written twice, summed by SQL)."""
    store = LedgerStore.open(tmp_path / "gw.db")
    early = record(1, time=_LAST_INSTANT - 60)
    if replayed:
        store.write([early])
    store.write([early, record(2, time=_LAST_INSTANT)])
    days = {day: n for day, kind, _, n, _ in rollups(store, tmp_path / "gw.db") if kind == "key"}
    by_day = {row["day"]: row["requests"] for row in store.usage("day", 0.0, None)}
    store.close()
    assert day_of(_LAST_INSTANT) == "2026-12-02"
    assert days == by_day == {"2026-12-02": 2}


def test_the_report_by_day_puts_every_instant_near_midnight_on_the_writers_day(
        tmp_path: Path) -> None:
    """Around a midnight: the floats next to it, half a microsecond and half a
    millisecond each side (Python's datetime rounds to the microsecond, SQLite's date()
    to the millisecond)."""
    midnight = _LAST_INSTANT + 0.0003
    below = [math.nextafter(midnight, 0.0)]
    for _ in range(3):
        below.append(math.nextafter(below[-1], 0.0))
    times = [midnight + d for d in (-5e-4, -4.9e-4, -5e-7, -4e-7, 0.0, 4e-7, 5e-4)] + below
    store = LedgerStore.open(tmp_path / "gw.db")
    store.write([record(n, time=t) for n, t in enumerate(times)])
    by_day = {row["day"]: row["requests"] for row in store.usage("day", 0.0, None)}
    store.close()
    assert by_day == dict(Counter(map(day_of, times)))
    assert len(by_day) == 2


def test_a_long_outages_spool_is_replayed_without_holding_it_all_in_memory(
        tmp_path: Path) -> None:
    """A spool of millions of lines (a day's outage) was read whole before the first
    batch was written, ~800 bytes of Python objects a line: a restart after it could run
    out of memory at start, every time. Read a batch at a time, its memory is a batch's."""
    lines, batch = 5000, 100
    spool = LedgerSpool(tmp_path / "gw.db.spool.jsonl")
    spool.path.write_bytes(b"".join(
        orjson.dumps(dataclasses.asdict(record(n)), option=orjson.OPT_APPEND_NEWLINE)
        for n in range(lines)))
    store = LedgerStore.open(tmp_path / "gw.db")
    tracemalloc.start()
    try:
        replayed = spool.replay(store, batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert replayed == store.count() == lines
    store.close()
    assert peak < 1_000_000  # 4.1 MB read whole; ~0.2 MB a batch at a time


def test_a_spool_line_damaged_into_values_no_record_has_stops_neither_replay_nor_budgets(
        tmp_path: Path) -> None:
    """A line that parses but is no record (a flipped bit in the usage's source, a time
    past year 9999) is skipped as a cut line is: it raised out of the replay, every
    cycle, so the good records never reached the database and the budgets' refresh
    (every worker's spend) and the retention after it never ran again."""
    good = [dataclasses.asdict(record(n)) for n in range(4)]
    damaged = [{**good[0], "request_id": "x1", "usage_source": "measurex"},
               {**good[0], "request_id": "x2", "time": 1e12},
               {**good[0], "request_id": "x3", "time": 1e20}]
    path = tmp_path / "gw.db"
    ledger = writer(path)
    ledger.spool_path.write_bytes(b"".join(
        orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        for line in [good[0], *damaged, *good[1:]]))
    ledger.start()
    ledger.close()
    assert stored(path) == [f"req-{n}" for n in range(4)]
    assert not ledger.spool_path.exists() and ledger.failures == 0


def test_the_retention_prunes_a_chunk_a_cycle_and_keeps_the_rollups(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune of many raw records (a retention lowered, a gateway busy for hours) in one
    statement holds the write lock for all of them (900,000: 2.3 s; every other worker's
    batch waits past its busy timeout and spools). A chunk a cycle, and the writer's own
    records go in between."""
    monkeypatch.setattr("azure_openai_proxy.gateway.ledger.PRUNE_CHUNK", 2, raising=False)
    path = tmp_path / "gw.db"
    store = LedgerStore.open(path)
    store.write([record(n, time=NOW - (91 + n) * 86400) for n in range(5)]
                + [record(9, time=NOW - 89 * 86400)])
    ledger = writer(path)  # the default retention: 90 days
    ledger.start()  # a cycle: a chunk pruned (the thread's first is 0.5 s away)
    old = [store.count() - 1]
    try:
        for n in range(4):
            ledger.add(finished(100 + n))
            assert ledger.flush()
            old.append(store.count() - n - 2)
    finally:
        ledger.close()
    assert old[0] == 3 and old[-1] == 0, old  # of 5 old records (and 1 recent)
    assert stored(path) == ["req-100", "req-101", "req-102", "req-103", "req-9"]
    assert sum(n for _, kind, _, n, _ in rollups(store, path) if kind == "key") == 6
    store.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_records_neither_the_database_nor_the_spool_takes_wait_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A disk full: the database fails and so does the spool beside it (here /dev/full,
    every write ENOSPC). The records wait in memory (up to the buffer's bound) and are
    written once the database is back, each once: they were lost."""
    path = tmp_path / "gw.db"
    path.mkdir()  # the database cannot be opened
    ledger = writer(path, batch_size=5, max_buffer=10)
    full = ledger.spool_path  # a link to /dev/full while the disk is full (never read)
    full.symlink_to("/dev/full")
    with caplog.at_level("ERROR", logger="azure_openai_proxy"):
        for n in range(11):  # the 6 oldest past the bound: the event loop's overflow
            ledger.add(finished(n))
        path.rmdir()
        full.unlink()  # room again
        ledger.start()
        try:
            assert ledger.flush()
            assert stored(path) == sorted(f"req-{n}" for n in range(11))
            full.symlink_to("/dev/full")  # full again: the writer's own batches
            for name in ("gw.db", "gw.db-wal", "gw.db-shm"):
                (tmp_path / name).unlink(missing_ok=True)
            for n in range(11, 16):
                ledger.add(finished(n))
            assert ledger.flush()
            full.unlink()
            restored = LedgerStore.open(path)  # restored: its label ids are its own
            restored.write([record(99, key="other", model="other")])
            ledger.add(finished(16))  # written first: its label ids read from the new file
            assert ledger.flush()
        finally:
            ledger.close()
    assert {r.request_id: (r.key_id, r.model) for r in restored.records()} == {
        "req-99": ("other", "other"), **{f"req-{n}": (None, "gpt-4o") for n in range(11, 17)}}
    restored.close()
    assert caplog.records and not any("lost" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_records_kept_in_memory_are_written_by_a_close_without_a_thread(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = writer(path, batch_size=5, max_buffer=10)
    ledger.spool_path.symlink_to("/dev/full")
    for n in range(11):  # the 6 oldest past the bound: kept in memory
        ledger.add(finished(n))
    ledger.spool_path.unlink()
    ledger.close()  # never started
    assert stored(path) == sorted(f"req-{n}" for n in range(11))


def test_a_batch_whose_spool_cannot_even_be_opened_waits_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    path.mkdir()  # the database cannot be opened, nor the spool (a directory each)
    ledger = writer(path)
    ledger.spool_path.mkdir()
    ledger.start()
    try:
        for n in range(3):
            ledger.add(finished(n))
        assert ledger.flush()
        path.rmdir()
        ledger.spool_path.rmdir()
        assert ledger.flush()
    finally:
        ledger.close()
    assert stored(path) == ["req-0", "req-1", "req-2"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_request_past_the_buffers_bound_spools_a_chunk_not_the_whole_excess(
        tmp_path: Path) -> None:
    """The event loop's overflow spooled all past half the bound at once, and with it
    every row kept in memory (a full disk before): 50,000 and 100,000 rows priced and
    serialised in one request, a 7 s stall. Now a chunk (256) a request past the bound,
    and the rows kept are left to the writer's thread; none is lost."""
    path = tmp_path / "gw.db"
    path.mkdir()  # the database cannot be opened
    ledger = writer(path, max_buffer=2000)
    ledger.spool_path.symlink_to("/dev/full")
    for n in range(2001):  # past the bound once: the spool is full, rows kept
        ledger.add(finished(n))
    assert ledger.waiting < 2000
    n = 2001
    ledger.spool_path.unlink()  # room again
    lines, written = 0, []
    for _ in range(1500):
        ledger.add(finished(n))
        n += 1
        if ledger.spool_path.exists():
            now = ledger.spool_path.read_bytes().count(b"\n")
            if now > lines:
                written.append(now - lines)
            lines = now
    assert written and max(written) <= 256, written
    path.rmdir()
    ledger.close()  # never started: everything queued or kept is written
    assert stored(path) == sorted(f"req-{i}" for i in range(n))


def test_a_spool_line_that_reads_as_no_record_is_kept_aside_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A line cut by a crash or damaged was dropped without a word: now the replay keeps
    it in `<spool>.refused` for the operator (the first MiB of such lines: a spool may be
    all garbage) and logs one warning with their count. The good records still count."""
    good = [orjson.dumps(dataclasses.asdict(record(n)), option=orjson.OPT_APPEND_NEWLINE)
            for n in range(3)]
    cut = good[0][:30] + b"\n"  # a worker killed mid-append, the next append after it
    garbage = b"\x00" * (2 << 20) + b"\n"  # counted, too long to keep
    damaged = orjson.dumps({**dataclasses.asdict(record(9)), "usage_source": "x"}) + b"\n"
    spool = LedgerSpool(tmp_path / "gw.db.spool.jsonl")
    spool.path.write_bytes(b"".join([good[0], cut, good[1], garbage, b"\n", damaged,
                                     good[2][:-1]]))
    store = LedgerStore.open(tmp_path / "gw.db")
    with caplog.at_level("WARNING", logger="azure_openai_proxy"):
        assert spool.replay(store, 2) == 3
    store.close()
    assert (tmp_path / "gw.db.spool.jsonl.refused").read_bytes() == cut + damaged
    warnings = [r.getMessage() for r in caplog.records if "no record" in r.getMessage()]
    assert len(warnings) == 1 and "3 spool lines" in warnings[0]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_records_kept_in_memory_go_to_the_spool_at_exit_when_it_has_room_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk (the database and the spool both fail): the writer's batches wait in
    memory. Room again but the database still unavailable (here, never openable), and a
    SIGTERM with nothing queued: those rows were lost at exit, though the spool would
    take them; they go to it, and are written once the database is back."""
    path = tmp_path / "gw.db"
    path.mkdir()  # the database cannot be opened
    ledger = writer(path)
    ledger.spool_path.symlink_to("/dev/full")
    ledger.start()
    with caplog.at_level("ERROR", logger="azure_openai_proxy"):
        try:
            for n in range(3):
                ledger.add(finished(n))
            assert ledger.flush() and ledger.waiting == 0
            ledger.spool_path.unlink()  # room again
        finally:
            ledger.close()
    assert not any("lost" in r.getMessage() for r in caplog.records)
    path.rmdir()
    store = LedgerStore.open(path)
    assert LedgerSpool(ledger.spool_path).replay(store, 100) == 3
    store.close()
    assert stored(path) == ["req-0", "req-1", "req-2"]


def test_rows_kept_by_one_thread_and_taken_by_another_are_each_kept_or_taken_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event loop keeps rows (its overflow's append failed) while the writer's
    thread takes them (a replay): a take of one popleft at a time met the other's drop
    of the oldest and raised IndexError (into a request, on the event loop), the rows
    it had taken lost without a word."""
    monkeypatch.setattr(logging.getLogger("azure_openai_proxy"), "disabled", True)
    spool = LedgerSpool(tmp_path / "gw.db.spool.jsonl", 50)
    rows = [row_of(record(n)) for n in range(20)]
    counts, errors = {"given": 0, "taken": 0}, []
    stop = time.monotonic() + 1.0

    def keep() -> None:
        try:
            while time.monotonic() < stop and not errors:
                spool._keep(rows)
                counts["given"] += len(rows)
        except Exception as exc:
            errors.append(exc)

    def take() -> None:
        try:
            while time.monotonic() < stop and not errors:
                counts["taken"] += len(spool._take_kept())
        except Exception as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=keep), threading.Thread(target=take)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert counts["taken"] + spool.kept <= counts["given"]


@pytest.mark.parametrize("name", ["a?b.db", "a#b.db", "a%20b.db", "a b.db", "ü.db",
                                  os.fsdecode(b"\xff.db")])
def test_a_usage_report_reads_a_database_whatever_its_file_name(
        tmp_path: Path, name: str) -> None:
    """The report opens the database by a `file:` URI (mode=rw: never made): a name
    with `?`, `#`, `%` or a space is quoted, and so is one not in UTF-8 (an undecodable
    byte is a lone surrogate in the str: quoting the str raised UnicodeEncodeError, a
    500 from /admin/usage, a traceback from the `usage` command). Missing, it is a
    sqlite3.Error (a 503), whatever its name."""
    path = tmp_path / "d" / name
    with pytest.raises(sqlite3.Error):
        read_usage(path, "key", 0.0, None)
    store = LedgerStore.open(path)
    store.write([record(1)])
    store.close()
    assert [row["requests"] for row in read_usage(path, "key", 0.0, None)] == [1]


_MIDNIGHTS = st.integers(0, 2_932_000).map(lambda d: d * 86400.0)
_TIMES = st.one_of(
    st.floats(0.0, 253_402_300_000.0),  # to year 9999
    _MIDNIGHTS.map(lambda m: math.nextafter(m, 0.0)),  # the float below a midnight
    st.tuples(_MIDNIGHTS, st.floats(-2e-6, 2e-6)).map(lambda t: max(0.0, t[0] + t[1])))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(times=st.lists(_TIMES, min_size=1, max_size=6))
@example(times=[1.0, math.nextafter(86400.0, 0.0)])  # the day's window, then its end
@example(times=[math.nextafter(86400.0, 0.0), 1.0])  # its end, then the day
def test_a_records_day_is_one_whether_priced_by_the_writer_replayed_or_reported(
        times: list[float]) -> None:
    """The writer's rows carry their UTC day (its rollups and the budgets' book); a
    replayed line's is day_of's; `usage --by day` is the store's SQL. The writer's took
    the floor of the time, the other two round it to the microsecond first: a record of
    a day's last half microsecond went to that day's rollups when written at once and
    to the next day's when replayed (and the report said the next). Non-negative times
    only: SQL truncates a negative one, and no clock gives one."""
    pricer = RowPricer(PriceTable.shipped(), {})
    rows: list[LedgerRow] = []
    queue = deque((finished(n, total_ms=0.0), t) for n, t in enumerate(times))
    pricer.take(queue, len(times), rows, (0.0, 0.0, ""))
    assert [row[0] for row in rows] == times
    store = LedgerStore(sqlite3.connect(":memory:", isolation_level=None))
    store.write_rows(rows)
    by_day = {row["day"]: row["requests"] for row in store.usage("day", 0.0, 3e11)}
    store.close()
    assert [row[14] for row in rows] == [day_of(t) for t in times]
    assert by_day == dict(Counter(map(day_of, times)))


def test_request_ids_of_many_processes_do_not_meet() -> None:
    """The ledger keeps one record per request id (INSERT OR IGNORE: a spool replayed
    twice counts once), so two processes whose ids meet lose the later one's records.
    Each process's ids are a random prefix and a counter from 1: with 32 random bits,
    among 2**18 processes (worker starts over a retention's 90 days) two shared one
    ~99.97% of the time; with 64, ~2e-9."""
    firsts = [_request_id_source()() for _ in range(1 << 18)]
    assert len(set(firsts)) == len(firsts)


def test_a_spool_that_cannot_be_read_stops_neither_the_budgets_refresh_nor_the_writer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The database works but the spool's path cannot be opened (a directory there, no
    permission): its replay raised every cycle, taken for a database failure (the store
    closed, "database unavailable" logged), and the budgets' refresh after it never ran:
    other workers' spend unseen, and the ids of every record written kept in memory for
    a refresh that never came. Now one warning, and the rest of the cycle runs."""
    path = tmp_path / "gw.db"
    ledger = writer(path)
    ledger.spool_path.mkdir()
    other = LedgerStore.open(path)  # another worker's record, key k2
    other.write([record(9, key="k2", cost=1.5)])
    other.close()
    with caplog.at_level("WARNING", logger="azure_openai_proxy"):
        ledger.start()  # the budgets' book read (the clock stands still: only then)
        try:
            for n in range(3):
                ledger.add(finished(n))
            assert ledger.flush()
            assert ledger.guard.book.spent(("key", "k2"), "") == pytest.approx(1.5)
        finally:
            ledger.close()
    assert ledger.failures == 0 and stored(path) == ["req-0", "req-1", "req-2", "req-9"]
    assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 1
