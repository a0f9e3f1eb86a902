"""What the ledger's spool says, and keeps, when nothing takes its records: a full disk
logs its losses once in a while, not once a chunk (gateway/ledgerspool.py, ledger.py)."""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import types
from pathlib import Path

import pytest

from azure_openai_proxy.gateway import ledgerspool
from azure_openai_proxy.gateway.ledgerspool import LedgerSpool
from azure_openai_proxy.store.ledger import LedgerStore, row_of
from tests.e2e.pools import FakeClock
from tests.unit.test_ledger_store import record
from tests.unit.test_ledger_writer import finished, writer


def _lost_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for r in caplog.records if "are lost" in (m := r.getMessage()) or "lost " in m]


def test_records_lost_chunk_after_chunk_are_said_once_in_ten_seconds_with_their_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "dir").write_bytes(b"")  # the spool's directory cannot be made: a file
    clock = FakeClock()
    spool = LedgerSpool(tmp_path / "dir" / "gw.db.spool.jsonl", 10, clock=clock)
    rows = [row_of(record(n)) for n in range(10)]
    said = "usage ledger: neither the database nor the spool {} takes records: {} of the " \
        "oldest of those waiting in memory lost since the last such line"
    with caplog.at_level(logging.ERROR, "azure_openai_proxy"):
        for _ in range(5):  # (each loss was a line: one every 256 requests past the bound)
            taken, problem = spool.append(rows)
            assert taken == rows and problem
            clock.advance(1)
        assert _lost_lines(caplog) == [said.format(spool.path, 10)]  # the first at once
        clock.advance(10)
        for _ in range(4):
            spool.append(rows)
        assert _lost_lines(caplog)[1:] == [said.format(spool.path, 40)]
        spool.close()
    assert _lost_lines(caplog)[2:] == [
        "usage ledger: 30 more of the oldest records waiting in memory were lost before exit",
        f"usage ledger: 10 records neither the database nor the spool {spool.path} took "
        "are lost at exit",
    ]


def test_rows_given_to_a_spool_replayed_each_time_it_is_waited_for_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A replay removed the file each time the append waited for its lock: after 3
    tries, the rows given were dropped without a word."""
    spool = LedgerSpool(tmp_path / "gw.db.spool.jsonl")

    def replayed_meanwhile(file: object, operation: int) -> None:
        spool.path.unlink(missing_ok=True)  # a replay took the lock first, and removed it
        fcntl.flock(file, operation)  # type: ignore[arg-type]

    monkeypatch.setattr(ledgerspool, "fcntl", types.SimpleNamespace(
        flock=replayed_meanwhile, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB))
    rows = [row_of(record(n)) for n in range(3)]
    with caplog.at_level(logging.ERROR, "azure_openai_proxy"):
        taken, problem = spool.append(rows)
    assert taken == rows and problem
    assert spool.kept == 3
    assert any("3 records wait in memory" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    store = LedgerStore(sqlite3.connect(tmp_path / "gw.db", isolation_level=None))
    assert spool.replay(store, 100) == 3  # written once the database takes them


def test_the_event_loops_failing_spool_appends_are_said_once_in_a_while(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Past the buffer's bound, every request tries to spool a chunk: with a spool that
    cannot be opened, each said so (a line per request)."""
    ledger = writer(tmp_path / "gw.db", batch_size=2, max_buffer=4)  # no thread: it queues
    ledger.spool_path.mkdir()
    with caplog.at_level(logging.ERROR, "azure_openai_proxy"):
        for n in range(30):
            ledger.add(finished(n))
    said = [r.getMessage() for r in caplog.records if "cannot write the spool" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("(1 such failures since the last line)")
    assert ledger.waiting == 30  # they stay queued
