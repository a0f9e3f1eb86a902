"""The ledger writer's full batch goes into SQLite as one INSERT: each statement is a
step the sqlite3 module takes without the GIL and then waits to have back from the
event loop, and a full batch (2,000 rows, what the writer hands the store under load)
was eight (1,024 + 3 x 256 + 3 x 64 + 16)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.store.ledger import FULL_BATCH, LedgerStore, row_of
from tests.unit.test_ledger_store import record, rollups


def _written(store: LedgerStore, first: int, keys: int) -> list[str]:
    """The statements `write_rows` runs for a full batch of the writer's (priced rows)."""
    rows = [row_of(record(n, key=f"k{n % keys}")) for n in range(first, first + FULL_BATCH)]
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        assert store.write_rows(rows, priced=True) == FULL_BATCH
    finally:
        store._db.set_trace_callback(None)
    return statements


@pytest.mark.parametrize(("keys", "count"), [(1, 6), (3, 5)])
def test_a_full_batch_is_one_insert(tmp_path: Path, keys: int, count: int) -> None:
    """Begin, the schema version, one INSERT of every row, (one label: its counts summed
    by SQLite), one upsert of the rollups, commit; and every row is there, counted once."""
    store = LedgerStore.open(tmp_path / "gw.db")
    try:
        _written(store, 0, keys)  # the labels, once
        statements = _written(store, FULL_BATCH, keys)
        inserts = [s for s in statements if s.startswith("INSERT OR IGNORE INTO usage_records")]
        assert len(inserts) == 1, statements
        assert len(statements) == count, statements
        assert store.count() == 2 * FULL_BATCH
        totals = {(kind, owner): n for _, kind, owner, n, _ in rollups(store, tmp_path / "gw.db")}
        assert totals[("model", "gpt-4o")] == 2 * FULL_BATCH
        assert sum(n for (kind, _), n in totals.items() if kind == "key") == 2 * FULL_BATCH
    finally:
        store.close()


def test_a_database_with_a_lower_parameter_limit_takes_a_full_batch_in_smaller_inserts(
        tmp_path: Path) -> None:
    """SQLite before 3.32 allows 999 parameters a statement: the 2,000-row INSERT is
    skipped, the smaller ones take the rows."""
    store = LedgerStore.open(tmp_path / "gw.db")
    try:
        store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        statements = _written(store, 0, 1)
        inserts = [s for s in statements if s.startswith("INSERT OR IGNORE INTO usage_records")]
        assert len(inserts) == 31 + 1  # 31 x 64 + 16: 76 rows at most (999 // 13)
        assert store.count() == FULL_BATCH
    finally:
        store.close()
