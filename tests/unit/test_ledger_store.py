from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.ledger import LedgerStore

DAY = 1_796_212_800.0  # 2026-12-02T12:00:00Z


def record(n: int, *, key: str | None = "k1", team: str | None = "t1", model: str = "gpt-4o",
           time: float = DAY, cost: float = 0.5) -> UsageRecord:
    return UsageRecord(time, f"req-{n}", key, team, model, "dep", "https://e/", "chat/completions",
                       200, prompt_tokens=10, cached_tokens=2, completion_tokens=5,
                       reasoning_tokens=1, cost_usd=cost, total_ms=3.0, usage_source="measured")


@pytest.fixture
def store(tmp_path: Path) -> LedgerStore:
    return LedgerStore.open(tmp_path / "gw.db")


def rollups(store: LedgerStore, path: Path) -> set[tuple[str, str, str, int, float]]:
    db = sqlite3.connect(path)
    try:
        return set(db.execute("SELECT day, kind, id, requests, cost_usd FROM usage_rollups"))
    finally:
        db.close()


def test_records_round_trip_and_a_second_write_of_the_same_request_counts_once(
    store: LedgerStore, tmp_path: Path,
) -> None:
    batch = [record(1), record(2, key="k2", team=None), record(3, model="o3-mini", time=DAY + 86400)]
    assert store.write(batch) == 3
    assert store.write([*batch[:2], record(4)]) == 1  # a replayed spool: only req-4 is new
    assert store.count() == 4
    assert store.records()[0] == batch[0]
    assert rollups(store, tmp_path / "gw.db") == {
        ("2026-12-02", "key", "k1", 2, 1.0), ("2026-12-02", "key", "k2", 1, 0.5),
        ("2026-12-02", "team", "t1", 2, 1.0), ("2026-12-02", "model", "gpt-4o", 3, 1.5),
        ("2026-12-03", "key", "k1", 1, 0.5), ("2026-12-03", "team", "t1", 1, 0.5),
        ("2026-12-03", "model", "o3-mini", 1, 0.5),
    }
    assert sorted(store.daily_spend("2026-12-03")) == [
        ("key", "k1", "2026-12-03", 0.5), ("team", "t1", "2026-12-03", 0.5)]


def test_retention_deletes_old_records_and_keeps_the_rollups(store: LedgerStore, tmp_path: Path) -> None:
    store.write([record(1, time=DAY - 100 * 86400), record(2)])
    assert store.delete_before(DAY - 90 * 86400) == 1
    assert [r.request_id for r in store.records()] == ["req-2"]
    assert len(rollups(store, tmp_path / "gw.db")) == 6


def test_usage_groups_and_orders(store: LedgerStore) -> None:
    store.write([record(1, cost=1.0), record(2, key="k2", cost=3.0), record(3, key=None, cost=0.25),
                 record(4, time=DAY + 86400, cost=2.0)])
    by_key = store.usage("key", DAY - 1, DAY + 2 * 86400)
    assert [(r["key"], r["requests"], r["cost_usd"]) for r in by_key] == [
        ("k1", 2, 3.0), ("k2", 1, 3.0), (None, 1, 0.25)]
    by_day = store.usage("day", 0, DAY + 2 * 86400)
    assert [(r["day"], r["requests"]) for r in by_day] == [("2026-12-02", 3), ("2026-12-03", 1)]
    assert store.usage("deployment", DAY + 3 * 86400) == []


def test_spend_since_sums_the_days_before_it_in_sql(store: LedgerStore) -> None:
    """The budgets' refresh reads a row per owner and day of the current periods, and one
    per owner for all the days before: not every rollup row ever written."""
    day = 86400.0
    start = 1_796_212_800.0 - 400 * day
    store.write([record(n, cost=0.5, time=start + n * day) for n in range(401)])
    rows = store.spend_since("2026-11-30")
    keys = sorted(r for r in rows if r[0] == "key")
    assert keys == [("key", "k1", "0000-00-00", pytest.approx(0.5 * 398)),
                    ("key", "k1", "2026-11-30", 0.5), ("key", "k1", "2026-12-01", 0.5),
                    ("key", "k1", "2026-12-02", 0.5)]
    assert len(rows) == 8  # the same for the team


@pytest.mark.parametrize("limit", [None, 100])
def test_a_large_batch_goes_in_whole_and_counts_once_in_the_rollups(
    tmp_path: Path, limit: int | None,
) -> None:
    """Rows are inserted by multi-row statements (128, 32, 8, 1 rows; fewer when the
    database allows fewer parameters): every row of a batch of any size is written, each
    once, and the rollups sum exactly the new ones."""
    store = LedgerStore.open(tmp_path / "gw.db")
    if limit is not None:
        store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)  # one row a statement
    first = [record(n, key=f"k{n % 3}", team=None if n % 2 else "t1", cost=0.25)
             for n in range(301)]
    assert store.write(first) == 301
    again = [*first[100:150], *(record(n, cost=0.25) for n in range(301, 330))]
    assert store.write(again) == 29  # a replay: only the new rows count
    assert store.count() == 330
    assert store.records()[-1] == again[-1]
    totals = {(kind, owner): (n, cost) for _, kind, owner, n, cost in rollups(store, tmp_path / "gw.db")}
    assert totals[("model", "gpt-4o")] == (330, 330 * 0.25)
    assert totals[("key", "k1")][0] == 100 + 29
    assert totals[("team", "t1")][0] == 151 + 29
    assert sum(n for (kind, _), (n, _) in totals.items() if kind == "key") == 330


def test_two_writers_on_one_database_agree_on_every_records_labels(tmp_path: Path) -> None:
    """Each store keeps its own map of labels to ids: a combination another worker
    inserted first is found, not duplicated, and every record reads back as written."""
    first, second = LedgerStore.open(tmp_path / "gw.db"), LedgerStore.open(tmp_path / "gw.db")
    try:
        assert first.write([record(1, key="k1"), record(2, key="k2")]) == 2
        assert second.write([record(3, key="k2"), record(4, key="k3", team=None)]) == 2
        assert first.write([record(5, key="k3", team=None), record(6, key="k4")]) == 2
        by_id = {r.request_id: (r.key_id, r.team_id) for r in second.records()}
        assert by_id == {"req-1": ("k1", "t1"), "req-2": ("k2", "t1"), "req-3": ("k2", "t1"),
                         "req-4": ("k3", None), "req-5": ("k3", None), "req-6": ("k4", "t1")}
        db = sqlite3.connect(tmp_path / "gw.db")
        try:
            assert db.execute("SELECT count(*) FROM usage_labels").fetchone() == (4,)
        finally:
            db.close()
    finally:
        first.close()
        second.close()


def test_a_full_batch_is_written_by_five_statements(store: LedgerStore) -> None:
    """Each statement is a step the sqlite3 module takes without the GIL and then waits
    to have back (from the event loop): a batch of 256 rows of known labels is the
    transaction's begin, the schema_version its label ids are checked against (a
    restore in place changes it), one insert, one upsert of all its rollups and the
    commit."""
    store.write([record(n, key=f"k{n % 3}") for n in range(256)])  # the labels, once
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert store.write([record(n, key=f"k{n % 3}") for n in range(256, 512)]) == 256
    store._db.set_trace_callback(None)
    assert len(statements) == 5, statements
    assert statements[:2] == ["BEGIN IMMEDIATE", "PRAGMA schema_version"]
    assert statements[-1] == "COMMIT"
    assert store.count() == 512
    totals = {(kind, owner): n for _, kind, owner, n, _ in rollups(store, store_path(store))}
    assert totals == {("key", "k0"): 171, ("key", "k1"): 171, ("key", "k2"): 170,
                      ("team", "t1"): 512, ("model", "gpt-4o"): 512}


def store_path(store: LedgerStore) -> Path:
    return Path(store._db.execute("PRAGMA database_list").fetchone()[2])


@pytest.mark.parametrize("limit", [999, 32766])
def test_a_batch_of_as_many_groups_as_rows_fits_the_databases_limit_of_variables(
    tmp_path: Path, limit: int,
) -> None:
    """SQLite before 3.32 binds at most 999 variables a statement, 32,766 after (Debian
    builds it with 250,000): a batch of 2,000 rows, each its own key, team and day, is
    6,000 rollups of 9 values, which no single statement of 999 or 32,766 takes."""
    store = LedgerStore.open(tmp_path / "gw.db")
    try:
        store._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
        records = [record(n, key=f"k{n}", team=f"t{n}", model=f"m{n % 7}",
                          time=DAY - 86400 * n) for n in range(2000)]
        assert store.write(records) == 2000
        assert store.write(records[:10] + [record(2000 + n) for n in range(5)]) == 5
        counts = dict(store._db.execute(
            "SELECT kind, sum(requests) FROM usage_rollups GROUP BY kind").fetchall())
        rows = store._db.execute("SELECT count(*) FROM usage_rollups").fetchone()[0]
    finally:
        store.close()
    assert counts == {"key": 2005, "team": 2005, "model": 2005}
    assert rows == 2000 + 2000 + 2000 + 1 + 1 + 1  # the 5 more: k1, t1, gpt-4o today


def test_two_workers_making_the_same_new_labels_at_once_agree_on_their_ids(
    tmp_path: Path,
) -> None:
    """Two workers' stores, each on its own thread, write records of the same 40 new
    combinations at the same moment: each label is made once (the UNIQUE constraint; the
    loser reads the winner's id) and every record reads back under its own key."""
    import threading

    path = tmp_path / "gw.db"
    LedgerStore.open(path).close()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(first: int) -> None:
        store = LedgerStore.open(path)
        try:
            start.wait(timeout=10)
            for part in range(4):
                store.write([record(first + part * 100 + n, key=f"k{n % 40}")
                             for n in range(100)])
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(first,)) for first in (0, 10_000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    store = LedgerStore.open(path)
    try:
        keys = {r.request_id: r.key_id for r in store.records()}
        labels = store._db.execute("SELECT count(*) FROM usage_labels").fetchone()[0]
    finally:
        store.close()
    assert len(keys) == 800 and labels == 40
    assert all(key == f"k{int(rid[4:]) % 100 % 40}" for rid, key in keys.items())


def test_a_priced_batch_of_one_label_and_day_is_summed_by_sqlite_to_the_same_rollups(
    tmp_path: Path,
) -> None:
    """The writer's own rows (`priced`) of one label and one UTC day, the usual batch,
    are summed by SQLite over the rows just inserted (without the GIL); of one day and
    several labels, grouped by the label id alone; any other batch by `_rollups` per
    (day, label id). Each path, given the same batches as the general one (costs that do
    not add up exactly, so that the order of the additions shows), leaves the same
    rollups to the last bit; and the SQL path is taken where it applies, and only
    there."""
    import random

    from azure_openai_proxy.store.ledger import row_of

    rng = random.Random(13)
    serial = iter(range(1_000_000))

    def batch(size: int, keys: list[str | None], start: float, span: float,
              ) -> list[UsageRecord]:
        out = []
        for n in range(size):
            out.append(UsageRecord(
                start + span * n / size, f"req-{next(serial)}", keys[n % len(keys)],
                "t1" if keys[0] else None, "gpt-4o", "dep", "https://e/", "chat/completions",
                200, prompt_tokens=rng.randrange(0, 2**32), cached_tokens=rng.randrange(9),
                completion_tokens=rng.randrange(5000), reasoning_tokens=rng.randrange(99),
                cost_usd=rng.random() / rng.choice([3, 7, 1e3, 1e6]), total_ms=3.0,
                usage_source="measured"))
        return out

    # each batch the first of its day (a rollup row a later batch adds to can round a
    # last-bit difference away), but the last two
    one = batch(300, ["k1"], DAY, 60)
    batches = [
        ("one", one),
        ("one", batch(1, ["k1"], DAY + 86400, 0)),
        ("one", batch(257, [None], DAY + 2 * 86400, 60)),  # no key, no team: its model only
        ("two days", batch(300, ["k1"], DAY + 3 * 86400 + 43_000, 800)),  # a UTC midnight
        ("keys", batch(300, ["k1", "k2", "k3"], DAY + 5 * 86400, 60)),
        ("one", batch(300, ["k2"], DAY, 60)),
        ("replayed", [*one[:100], *batch(50, ["k1"], DAY, 60)]),  # 100 there already
    ]
    fast, general = LedgerStore.open(tmp_path / "fast.db"), LedgerStore.open(tmp_path / "gen.db")
    statements: list[str] = []
    fast._db.set_trace_callback(statements.append)
    read = "SELECT * FROM usage_rollups ORDER BY day, kind, id"
    try:
        for kind, records in batches:
            rows = [row_of(r) for r in records]
            statements.clear()
            assert fast.write_rows(rows, priced=True) == general.write_rows(rows)
            summed = [s for s in statements if "rowid BETWEEN" in s]
            assert len(summed) == (kind == "one"), (kind, statements)
            # after each batch: later sums can round a last-bit difference away
            assert fast._db.execute(read).fetchall() == general._db.execute(read).fetchall()
        assert len(fast._db.execute(read).fetchall()) == 19
    finally:
        fast.close()
        general.close()
