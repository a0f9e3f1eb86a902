"""Session 30's integration review: `LockWaits` (store/sqlite.py) wired into both ledger
writers, and its edges. One `LockWaits` per writer, shared by the stores it opens in
turn (each writer closes its store at any failure: a `LockWaits` per store was inert);
an `OperationalError` without `sqlite_errorcode` (Python's own) is re-raised as it is;
a busy error that came at once is no vain wait; after a vain wait another writer's
ordinary short transaction (another worker's batch) is still waited for, not failed
at once and spooled."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.gateway import journalchild
from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.store.ledger import LedgerStore
from azure_openai_proxy.store.sqlite import LockWaits


class _Raising:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def execute(self, sql: str, params: Any = ()) -> Any:
        raise self.exc


def test_an_operational_error_without_an_error_code_is_reraised_as_it_is() -> None:
    waits = LockWaits()
    with pytest.raises(sqlite3.OperationalError, match="Python's own"):
        waits.execute(_Raising(sqlite3.OperationalError("Python's own")),  # type: ignore[arg-type]
                      1000, "INSERT INTO t VALUES (1)")
    assert waits.until == 0.0


def test_a_busy_error_that_came_at_once_is_no_vain_wait() -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    waits = LockWaits()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        waits.execute(_Raising(busy), 1000, "BEGIN IMMEDIATE")  # type: ignore[arg-type]
    assert waits.until == 0.0  # the next statements still wait


def test_after_a_vain_wait_a_short_transaction_elsewhere_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    waits = LockWaits()
    store = LedgerStore.open(path, busy_timeout_ms=1000, waits=waits)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        waits.until = time.monotonic() + 60  # as after a vain wait
        taken, go = threading.Event(), threading.Event()

        def batch() -> None:  # another worker's writer: a transaction of ~20 ms
            other.execute("BEGIN IMMEDIATE")
            taken.set()
            go.wait(10)
            time.sleep(0.02)
            other.execute("COMMIT")

        holder = threading.Thread(target=batch)
        holder.start()
        assert taken.wait(10)
        go.set()
        try:  # main: failed at once (busy), the records spooled
            assert store.label_id(("a", "", "gpt-4o", "dep", "https://e", "x")) > 0
        finally:
            holder.join(10)
    finally:
        other.close()
        store.close()


def test_the_thread_writer_gives_its_stores_one_lock_waits(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "g.db", PriceTable({}), {}, BudgetGuard())
    first = writer._open()
    assert first is not None
    writer._failed(sqlite3.OperationalError("database is locked"))
    second = writer._open()
    try:
        assert second is not None and second is not first
        assert second._waits is first._waits  # main: a fresh one each store
    finally:
        writer._close_store()


def test_the_journal_child_gives_its_stores_one_lock_waits(tmp_path: Path) -> None:
    LedgerStore.open(tmp_path / "g.db").close()
    ledger = journalchild.Ledger(tmp_path / "g.db", 1000)
    first = ledger._open()
    ledger.close()
    second = ledger._open()
    try:
        assert second is not first and second._waits is first._waits
    finally:
        ledger.close()
