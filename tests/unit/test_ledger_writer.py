"""The ledger writer with a real SQLite file: overflow to the spool, replay, close."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.budgethold import reserve_budget, settle_budget
from azure_openai_proxy.gateway.ledger import LedgerWriter, usage_record
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import LedgerStore

NOW = 1_796_212_800.0


def finished(n: int, **fields: object) -> RequestRecord:
    record = RequestRecord(f"req-{n}", "POST", route="chat/completions", model="gpt-4o",
                           deployment="dep", endpoint="https://e/", status=200, total_ms=1000.0,
                           usage={"prompt_tokens": 1000, "completion_tokens": 100})
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def writer(path: Path, **options: int) -> LedgerWriter:
    return LedgerWriter(path, PriceTable.shipped(), {("https://e/", "dep"): "gpt-4o-mini"},
                        BudgetGuard(clock=lambda: NOW), clock=lambda: NOW, **options)


def stored(path: Path) -> list[str]:
    store = LedgerStore.open(path)
    try:
        return sorted(r.request_id for r in store.records())
    finally:
        store.close()


def test_a_record_is_priced_and_timed_from_its_arrival() -> None:
    table = PriceTable.shipped()
    record = usage_record(finished(1), NOW - 1.0, table, {})
    assert record.time == NOW - 1.0 and record.usage_source == "measured" and record.priced
    assert record.cost_usd == (1000 * 2.50 + 100 * 10.00) / 1e6
    # an unknown client model: the deployment's model prices it
    aliased = usage_record(finished(2, model="alias"), NOW, table, {("https://e/", "dep"): "gpt-4o-mini"})
    assert aliased.cost_usd == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    unknown = usage_record(finished(3, model="alias", deployment="x"), NOW, table, {})
    assert (unknown.cost_usd, unknown.priced) == (0.0, False)
    estimated = usage_record(finished(4, usage={"prompt_tokens": 3, "completion_tokens": 2,
                                                "estimated": True}), NOW, table, {})
    assert estimated.usage_source == "estimated"
    assert usage_record(finished(5, usage=None), NOW, table, {}).usage_source == "none"


@pytest.mark.parametrize("route", ["images/generations", "images/edits",
                                   "audio/transcriptions", "audio/speech"])
def test_a_unit_priced_answer_without_usage_is_marked_unpriced(route: str) -> None:
    """Images, audio and speech are billed by units the ledger does not count: a 2xx
    without token usage is recorded as unpriced, not as a priced $0."""
    table = PriceTable.shipped()
    answered = usage_record(finished(1, route=route, model="dall-e-3", usage=None), NOW, table, {})
    assert (answered.cost_usd, answered.priced) == (0.0, False)
    refused = usage_record(finished(2, route=route, status=400, usage=None), NOW, table, {})
    assert refused.priced  # an error answer costs nothing, truly
    listed = usage_record(finished(3, route="files", usage=None), NOW, table, {})
    assert listed.priced


def test_overflow_goes_to_the_spool_and_is_replayed_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = writer(path, batch_size=5, max_buffer=10)
    for n in range(25):  # nothing drains the buffer yet: the thread is not started
        ledger.add(finished(n))
    assert ledger.spool_path.exists()
    ledger.spool_path.write_bytes(ledger.spool_path.read_bytes() + b'{"cut by a cra')
    ledger.start()
    ledger.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(25))
    assert not ledger.spool_path.exists()


def test_overflow_on_the_event_loop_never_waits_for_the_spool_lock(tmp_path: Path) -> None:
    """A replay holds the spool's lock for its whole database write: a request past the
    buffer's bound must not wait for it (it runs on the event loop); its records stay
    queued and nothing is lost."""
    import fcntl
    import threading

    path = tmp_path / "gw.db"
    ledger = writer(path, batch_size=5, max_buffer=10)
    with open(ledger.spool_path, "ab") as replaying:
        fcntl.flock(replaying, fcntl.LOCK_EX)  # as _replay holds it
        added = threading.Event()

        def add() -> None:
            for n in range(25):
                ledger.add(finished(n))
            added.set()

        threading.Thread(target=add, daemon=True).start()
        assert added.wait(10), "add() waited for the spool's lock"
        fcntl.flock(replaying, fcntl.LOCK_UN)
    ledger.add(finished(25))  # past the bound, the lock free: spooled now
    assert ledger.spool_path.stat().st_size > 0
    ledger.start()
    ledger.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(26))


def test_a_database_that_cannot_be_opened_spools_and_a_later_run_replays(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    path.mkdir()  # a directory where the database should be: every open fails
    ledger = writer(path)
    ledger.start()
    for n in range(3):
        ledger.add(finished(n, key_id="k1"))
    ledger.close()  # never raises
    assert ledger.failures > 0 and ledger.spool_path.exists()
    # meanwhile the budgets counted the spend from the records themselves
    assert ledger.guard.book.spent(("key", "k1"), "") > 0
    path.rmdir()
    again = writer(path)
    again.start()
    again.close()
    assert stored(path) == ["req-0", "req-1", "req-2"]
    assert not again.spool_path.exists()


def test_close_without_a_thread_writes_what_is_queued(tmp_path: Path) -> None:
    ledger = writer(tmp_path / "gw.db")
    for n in range(3):
        ledger.add(finished(n))
    ledger.close()
    assert stored(tmp_path / "gw.db") == ["req-0", "req-1", "req-2"]


def test_the_budgets_follow_the_records_written(tmp_path: Path) -> None:
    """The book is read again every few seconds (not after every batch); until then the
    cost this worker settled is held in memory, and counted once either way."""
    clock = [NOW]
    guard = BudgetGuard(clock=lambda: clock[0])
    ledger = LedgerWriter(tmp_path / "gw.db", PriceTable.shipped(),
                          {("https://e/", "dep"): "gpt-4o-mini"}, guard, clock=lambda: clock[0])
    ledger.start()
    limited = VirtualKey(id="k1", name="k", secret_hash="-", prefix="sk-aop-", team_id="t1",
                         limits=Limits(budget_usd=100.0, budget_period="daily"))
    record = finished(1, key_id="k1", team_id="t1")
    hold = reserve_budget(guard, Caller(None, limited), {"max_tokens": 10}, ("gpt-4o",))
    settle_budget(guard, hold, record)
    cost = (1000 * 2.50 + 100 * 10.00) / 1e6
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(cost)
    ledger.add(record)
    assert ledger.flush()
    assert guard.book.spent(("key", "k1"), "") == 0.0  # not read back yet: still held
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(cost)
    clock[0] += 3
    assert ledger.flush()
    assert guard.book.spent(("key", "k1"), "") == pytest.approx(cost)
    assert guard.book.spent(("team", "t1"), "2026-12-02") == pytest.approx(cost)
    assert guard.held(("key", "k1")) == 0.0
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(cost)
    ledger.close()


def test_the_writer_applies_the_retention_to_raw_records(tmp_path: Path) -> None:
    from azure_openai_proxy.governance.model import UsageRecord

    path = tmp_path / "gw.db"
    store = LedgerStore.open(path)
    store.write([UsageRecord(NOW - 91 * 86400, "old", "k1", None, "gpt-4o", "dep", "e", "r", 200),
                 UsageRecord(NOW - 89 * 86400, "recent", "k1", None, "gpt-4o", "dep", "e", "r", 200)])
    store.close()
    ledger = writer(path)  # the default retention: 90 days
    ledger.start()
    ledger.close()
    assert stored(path) == ["recent"]


def test_records_served_before_a_reload_keep_the_prices_they_were_served_at(tmp_path: Path) -> None:
    from azure_openai_proxy.governance.prices import Price

    path = tmp_path / "gw.db"
    ledger = writer(path)
    ledger.add(finished(1))
    ledger.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
    ledger.add(finished(2))
    ledger.close()
    store = LedgerStore.open(path)
    try:
        costs = {r.request_id: r.cost_usd for r in store.records()}
    finally:
        store.close()
    assert costs["req-1"] == pytest.approx((1000 * 2.50 + 100 * 10.00) / 1e6)
    assert costs["req-2"] == pytest.approx(1100 * 1000.0 / 1e6)


def _budgeted_key() -> VirtualKey:
    return VirtualKey(id="k1", name="k", secret_hash="-", prefix="sk-aop-",
                      limits=Limits(budget_usd=100.0, budget_period="daily"))


def _served(guard: BudgetGuard, ledger: LedgerWriter, n: int) -> None:
    """Request n of the budgeted key: held, ended (its cost settled) and handed over."""
    record = finished(n, key_id="k1")
    hold = reserve_budget(guard, Caller(None, _budgeted_key()), {"max_tokens": 10}, ("gpt-4o",))
    settle_budget(guard, hold, record)
    ledger.add(record)


COST = (1000 * 2.50 + 100 * 10.00) / 1e6


def test_a_hold_is_released_once_when_another_worker_replays_the_spool(tmp_path: Path) -> None:
    """Worker A's buffer overflows to the spool (from its event loop); worker B replays the
    spool into the database. A's holds for those records must go when A's book has them
    (counted once, not held on top of the book until A restarts)."""
    path = tmp_path / "gw.db"
    clock = [NOW]
    guard = BudgetGuard(clock=lambda: clock[0])
    a = LedgerWriter(path, PriceTable.shipped(), {}, guard, clock=lambda: clock[0],
                     batch_size=5, max_buffer=10)
    for n in range(25):  # A's thread is not started: its buffer overflows to the spool
        _served(guard, a, n)
    assert a.spool_path.exists()
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(25 * COST)
    b = writer(path)
    b.start()  # B replays the spool
    b.close()
    assert not a.spool_path.exists()
    a.start()
    clock[0] += 3
    assert a.flush()
    assert guard.book.spent(("key", "k1"), "") == pytest.approx(25 * COST)
    assert guard.held(("key", "k1")) == 0.0
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(25 * COST)
    a.close()


def test_the_hold_of_a_spooled_record_cut_by_a_crash_is_released(tmp_path: Path) -> None:
    """A spool line cut by a crash is skipped by the replay: once the spool is gone and
    the database does not have the record, its hold goes (it would never be released)."""
    path = tmp_path / "gw.db"
    clock = [NOW]
    guard = BudgetGuard(clock=lambda: clock[0])
    a = LedgerWriter(path, PriceTable.shipped(), {}, guard, clock=lambda: clock[0],
                     batch_size=5, max_buffer=10)
    for n in range(25):
        _served(guard, a, n)
    a.spool_path.write_bytes(a.spool_path.read_bytes()[:-20])  # the last line cut
    b = writer(path)
    b.start()
    b.close()
    a.start()
    clock[0] += 3
    assert a.flush()
    assert len(stored(path)) == 24
    assert guard.held(("key", "k1")) == 0.0
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(24 * COST)
    a.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_hold_whose_record_could_not_be_spooled_is_released(tmp_path: Path) -> None:
    """The spool cannot be written (here it is /dev/full: every write fails with ENOSPC)
    when the buffer overflows: the records taken for it wait in memory up to the
    buffer's bound, past it are lost, and their holds must not keep counting against
    the key for as long as the worker runs."""
    path = tmp_path / "gw.db"
    clock = [NOW]
    guard = BudgetGuard(clock=lambda: clock[0])
    ledger = LedgerWriter(path, PriceTable.shipped(), {}, guard, clock=lambda: clock[0],
                          batch_size=5, max_buffer=10)
    ledger.spool_path.symlink_to("/dev/full")
    for n in range(25):
        _served(guard, ledger, n)
    # kept in memory (or lost, past the bound), not yet in a book: still held (they
    # were let go at once, their costs in no book until the database had them)
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(25 * COST)
    ledger.spool_path.unlink()  # nothing was spooled: nothing to replay
    ledger.start()
    clock[0] += 3
    assert ledger.flush()
    kept = len(stored(path))
    assert 0 < kept < 25  # the rest were lost
    assert guard.book.spent(("key", "k1"), "") == pytest.approx(kept * COST)
    assert guard.held(("key", "k1")) == 0.0
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(kept * COST)
    ledger.close()


def test_a_spool_that_cannot_be_opened_keeps_the_records_queued_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Opening the spool fails before any record is taken from the queue: nothing is
    lost, and the log says the records stay queued rather than "records lost"."""
    path = tmp_path / "gw.db"
    ledger = writer(path, batch_size=5, max_buffer=10)
    ledger.spool_path.mkdir(parents=True)  # a directory where the spool should be
    with caplog.at_level("ERROR", logger="azure_openai_proxy"):
        for n in range(12):
            ledger.add(finished(n))
    messages = [r.getMessage() for r in caplog.records]
    assert messages and not any("lost" in m for m in messages)
    assert "the 6 oldest of 11 queued records stay in memory" in messages[0]
    ledger.spool_path.rmdir()
    ledger.start()
    ledger.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(12))


def test_a_database_removed_after_it_was_opened_is_not_made_anew(tmp_path: Path) -> None:
    """Its directory removed under a running writer: records spool, no empty database
    takes its place (the key directory refuses to make one too), and once it is back
    (restored) the spool is written to it."""
    import shutil

    path = tmp_path / "data" / "gw.db"
    ledger = writer(path)
    ledger.start()
    try:
        ledger.add(finished(1))
        assert ledger.flush()
        assert stored(path) == ["req-1"]
        shutil.rmtree(path.parent)
        ledger.add(finished(2))
        assert ledger.flush()
        assert not path.exists()
        assert ledger.spool_path.exists() and ledger.failures > 0
        LedgerStore.open(path).close()  # restored (here: made empty by the operator)
        assert ledger.flush()
        assert stored(path) == ["req-2"]
        assert not ledger.spool_path.exists()
    finally:
        ledger.close()


def _costs_stored(path: Path) -> dict[str, tuple[float, bool, str | None]]:
    store = LedgerStore.open(path)
    try:
        return {r.request_id: (r.cost_usd, r.priced, r.key_id) for r in store.records()}
    finally:
        store.close()


@pytest.mark.parametrize(("model", "deployment", "served_by"), [
    ("gpt-4o", "dep", None), ("gpt-4o-2024-08-06", "dep", None), ("alias", "dep", "gpt-4o-mini"),
    ("o3-mini", "dep", None), ("GPT-4O", "dep", None),
])
def test_the_writers_cost_is_the_price_tables_arithmetic_exactly(
    model: str, deployment: str, served_by: str | None,
) -> None:
    """The writer prices inline (no call per record): to the last bit what
    `PriceTable.cost` says for the same names and counts, cached and reasoning tokens
    included."""
    from azure_openai_proxy.governance.prices import TokenCounts

    table = PriceTable.shipped()
    models = {("https://e/", deployment): served_by} if served_by else {}
    for n, (prompt, cached, completion, reasoning) in enumerate(
            [(1000, 0, 100, 0), (1234, 1000, 77, 0), (3, 3, 1, 1), (987_654, 123_456, 54_321, 999),
             (1, 0, 0, 0), (0, 0, 5, 5)]):
        usage: dict[str, object] = {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}
        record = usage_record(finished(n, model=model, deployment=deployment, usage=usage), NOW,
                              table, models)
        expected = table.cost((model, served_by, deployment),
                              TokenCounts(prompt, cached, completion, reasoning))
        assert (record.cost_usd, record.priced) == expected
        assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens,
                record.reasoning_tokens) == (prompt, cached, completion, reasoning)


def test_a_reload_inside_a_batch_of_several_chunks_prices_each_side_at_its_own(
    tmp_path: Path,
) -> None:
    """A reload's mark can fall anywhere in a batch:
    the records before it keep the old prices, those after get the new, none is lost
    or priced twice."""
    from azure_openai_proxy.governance.prices import Price

    path = tmp_path / "gw.db"
    ledger = writer(path, batch_size=2000)  # all 1,000 below are one batch
    for n in range(450):
        ledger.add(finished(n))
    ledger.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
    for n in range(450, 650):
        ledger.add(finished(n))
    ledger.reconfigure(PriceTable({"gpt-4o": Price(input=1.0, output=2.0)}), {})
    for n in range(650, 1000):
        ledger.add(finished(n))
    ledger.start()
    ledger.close()
    costs = _costs_stored(path)
    assert len(costs) == 1000
    first, second, third = (1000 * 2.50 + 100 * 10.00) / 1e6, 1100 * 1000.0 / 1e6, 1200 / 1e6
    assert all(costs[f"req-{n}"][0] == first for n in range(450))
    assert all(costs[f"req-{n}"][0] == second for n in range(450, 650))
    assert all(costs[f"req-{n}"][0] == third for n in range(650, 1000))


def test_past_the_writers_memory_of_names_every_record_keeps_its_own(tmp_path: Path) -> None:
    """The writer remembers each combination of names (key, model, deployment...) with
    its labels and rates, bounded: past the bound it forgets and starts again, and every
    record is still stored under its own key with its own price."""
    path = tmp_path / "gw.db"
    ledger = writer(path, batch_size=5000)
    for n in range(4200):
        ledger.add(finished(n, key_id=f"key-{n}",
                            model="gpt-4o" if n % 2 else "nothing-prices-this"))
    ledger.start()
    ledger.close()
    costs = _costs_stored(path)
    assert len(costs) == 4200
    for n in range(4200):
        cost, priced, key_id = costs[f"req-{n}"]
        assert key_id == f"key-{n}"
        if n % 2:
            assert (cost, priced) == ((1000 * 2.50 + 100 * 10.00) / 1e6, True)
        else:  # the deployment's model (gpt-4o-mini) prices it
            assert (cost, priced) == ((1000 * 0.15 + 100 * 0.60) / 1e6, True)


def test_a_database_replaced_under_the_writer_gets_its_own_label_ids(tmp_path: Path) -> None:
    """The writer remembers each combination's label id in the database it has open:
    when the file is replaced by another one (removed and restored from a backup, whose
    labels have other ids) before the writer next looks, the ids are asked of the new
    one, and every record reads back under its own key."""
    import shutil
    import sqlite3

    path = tmp_path / "data" / "gw.db"
    ledger = writer(path)
    ledger.start()
    try:
        ledger.add(finished(1, key_id="k1"))
        assert ledger.flush()
        shutil.rmtree(path.parent)
        LedgerStore.open(path).close()
        db = sqlite3.connect(path, isolation_level=None)
        for n in range(5):  # labels with the ids the first database gave to k1's record
            db.execute("INSERT INTO usage_labels VALUES (?, ?, '', '', '', '', 'r')",
                       (n + 1, f"other-{n}"))
        db.close()
        ledger.add(finished(2, key_id="k1"))
        ledger.add(finished(3, key_id="k2"))
        assert ledger.flush()
    finally:
        ledger.close()
    store = LedgerStore.open(path)
    try:
        assert {r.request_id: r.key_id for r in store.records()} == {"req-2": "k1", "req-3": "k2"}
    finally:
        store.close()


def test_the_writers_token_counts_are_count_tokens_for_every_shape_of_usage() -> None:
    """The writer reads chat's usage inline (the counts with both details objects, or
    with none): for every shape, valid or not, it records exactly what `count_tokens`
    reads, and the estimate flag as the usage says."""
    import itertools

    from azure_openai_proxy.governance.prices import count_tokens

    counts: list[object] = [None, 0, 7, -3, 2.5, "9", True, 2**32 - 1, 2**32, 2**63, 2**70]
    details: list[object] = [None, {}, {"cached_tokens": 5}, {"cached_tokens": 50},
                             {"cached_tokens": -1}, {"reasoning_tokens": 4}, [1], "x",
                             {"cached_tokens": 2**64}, {"reasoning_tokens": 2**64}]
    shapes: list[dict[str, object]] = []
    for prompt, completion in itertools.product(counts, counts):
        for first, second in itertools.product(details, details):
            usage: dict[str, object] = {"prompt_tokens": prompt, "completion_tokens": completion}
            if first is not None:
                usage["prompt_tokens_details"] = first
            if second is not None:
                usage["completion_tokens_details"] = {"reasoning_tokens": 3} if second == {
                    "cached_tokens": 5} else second
            shapes.append(usage)
    shapes += [{"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
               {"prompt_tokens": 5, "completion_tokens": 2, "estimated": True},
               {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "estimated": True},
               {"prompt_tokens": 5, "completion_tokens": 2,
                "input_tokens_details": {"cached_tokens": 4}},
               {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": {},
                "input_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 1}},
               {"input_tokens": 9, "output_tokens": 4,
                "input_tokens_details": {"cached_tokens": 2},
                "output_tokens_details": {"reasoning_tokens": 1}},
               {"prompt_tokens": 5, "completion_tokens": 2, "estimated": True,
                "prompt_tokens_details": {"cached_tokens": 1},
                "completion_tokens_details": {"reasoning_tokens": 1}}]
    table = PriceTable.shipped()
    for n, usage in enumerate(shapes):
        record = usage_record(finished(n, usage=usage), NOW, table, {})
        assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens,
                record.reasoning_tokens) == count_tokens(usage), usage
        assert record.usage_source == ("estimated" if usage.get("estimated") else "measured")


def test_a_token_count_too_large_for_sqlite_loses_no_record(tmp_path: Path) -> None:
    """A usage count of 2**63 or more cannot be bound to SQLite: the record, and every
    record of its batch, went to the spool, whose replay then failed at every pass
    (the budgets' book never read again). Counts are read as at most MAX_TOKENS."""
    from azure_openai_proxy.governance.prices import MAX_TOKENS

    path = tmp_path / "gw.db"
    ledger = writer(path)
    ledger.start()
    try:
        ledger.add(finished(1, usage={"prompt_tokens": 2**63, "completion_tokens": 1}))
        ledger.add(finished(2, usage={"prompt_tokens": 5, "completion_tokens": 2**70,
                                      "prompt_tokens_details": {"cached_tokens": 2**64},
                                      "completion_tokens_details": {"reasoning_tokens": 2**65}}))
        ledger.add(finished(3))
        assert ledger.flush() and ledger.flush()
    finally:
        ledger.close()
    assert not ledger.spool_path.exists() and ledger.failures == 0
    store = LedgerStore.open(path)
    try:
        tokens = {r.request_id: (r.prompt_tokens, r.cached_tokens, r.completion_tokens,
                                 r.reasoning_tokens) for r in store.records()}
    finally:
        store.close()
    assert tokens == {"req-1": (MAX_TOKENS, 0, 1, 0), "req-2": (5, 5, MAX_TOKENS, MAX_TOKENS),
                      "req-3": (1000, 0, 100, 0)}


def test_a_spooled_line_with_a_count_too_large_for_sqlite_is_replayed(tmp_path: Path) -> None:
    """A spool an older writer left with such a count replays (its count read as
    MAX_TOKENS), and the records spooled beside it with it."""
    import dataclasses

    import orjson

    from azure_openai_proxy.governance.prices import MAX_TOKENS

    path = tmp_path / "gw.db"
    lines = []
    for n in range(3):
        line = dataclasses.asdict(usage_record(finished(n), NOW, PriceTable.shipped(), {}))
        if n == 1:
            line["prompt_tokens"] = 2**63  # orjson writes up to 2**64 - 1
        lines.append(orjson.dumps(line) + b"\n")
    path.with_name("gw.db.spool.jsonl").write_bytes(b"".join(lines))
    ledger = writer(path)
    ledger.start()
    ledger.close()
    assert not ledger.spool_path.exists()
    store = LedgerStore.open(path)
    try:
        assert {r.request_id: r.prompt_tokens for r in store.records()} == {
            "req-0": 1000, "req-1": MAX_TOKENS, "req-2": 1000}
    finally:
        store.close()


def test_a_database_restored_in_place_gets_its_own_label_ids(tmp_path: Path) -> None:
    """A restore through SQLite's backup API (`.restore`, `Connection.backup`) keeps the
    file and its inode, so the writer keeps its connection, but the label ids are the
    backup's: a record was written under the id its key had before, which names another
    key in the backup (its cost in that key's rollups and budget). The ids are asked
    again, in the batch that finds the schema_version changed and in those after it."""
    import sqlite3

    path = tmp_path / "gw.db"
    ledger = writer(path)
    ledger.start()
    try:
        ledger.add(finished(1, key_id="k1"))
        assert ledger.flush()
        backup = LedgerStore.open(tmp_path / "backup.db")
        for n in range(3):  # the ids the first database gave k1's labels, other keys'
            backup.label_id((f"other-{n}", "", "", "", "", "r"))
        backup.close()
        source, target = sqlite3.connect(tmp_path / "backup.db"), sqlite3.connect(path)
        source.backup(target)
        source.close()
        target.close()
        ledger.add(finished(2, key_id="k1"))
        assert ledger.flush()
        ledger.add(finished(3, key_id="k1"))
        assert ledger.flush()
    finally:
        ledger.close()
    store = LedgerStore.open(path)
    try:
        assert {r.request_id: r.key_id for r in store.records()} == {"req-2": "k1", "req-3": "k1"}
        assert {owner for kind, owner, _, _ in store.daily_spend("2000-01-01")
                if kind == "key"} == {"k1"}
    finally:
        store.close()


def test_a_spooled_record_the_database_refuses_stops_neither_the_replay_nor_the_budgets(
    tmp_path: Path,
) -> None:
    """A spooled line whose values the database (or the rollups' sums) refuse, whatever
    its state, failed the replay at every pass: the spool was never removed, the records
    beside it never written, and the budgets' book, read after the replay, never read
    again. It is set aside beside the spool; the rest is written."""
    import dataclasses

    import orjson

    path = tmp_path / "gw.db"
    lines = []
    for n in range(3):
        line = dataclasses.asdict(usage_record(finished(n), NOW, PriceTable.shipped(), {}))
        if n == 1:
            line["prompt_tokens"] = "1000"  # not a count: the rollups cannot sum it
        lines.append(orjson.dumps(line) + b"\n")
    spool = path.with_name("gw.db.spool.jsonl")
    spool.write_bytes(b"".join(lines))
    ledger = writer(path)
    ledger.start()
    try:
        assert not spool.exists() and ledger.failures == 0
        ledger.add(finished(3))
        assert ledger.flush()
    finally:
        ledger.close()
    assert stored(path) == ["req-0", "req-2", "req-3"]
    refused = path.with_name("gw.db.spool.jsonl.refused").read_bytes().splitlines()
    assert [orjson.loads(line)["request_id"] for line in refused] == ["req-1"]


def test_an_overflow_while_the_writer_prices_moves_no_record_to_the_other_prices(
    tmp_path: Path,
) -> None:
    """The event loop's overflow takes records from the queue too. When it came while
    the writer was pricing a chunk and took a reload's mark, the writer's chunk went on
    with the old prices over records served after the reload. The overflow now takes
    nothing while a chunk is priced (its records stay queued). Here the overflow comes
    from inside the writer's chunk (a price looked up for a new model adds records), the
    one interleaving a test can make happen every time."""
    from azure_openai_proxy.governance.prices import Price, Rates

    class Interrupting(PriceTable):
        def rates(self, names: Iterable[str | None]) -> Rates | None:
            names = tuple(names)
            if "interrupting" in names:
                for n in (3, 4):
                    ledger.add(finished(n))  # past the bound: the overflow runs
            return super().rates(names)

    path = tmp_path / "gw.db"
    ledger = LedgerWriter(path, Interrupting({"gpt-4o": Price(2.5, 10.0)}), {},
                          BudgetGuard(clock=lambda: NOW), clock=lambda: NOW, batch_size=2,
                          max_buffer=4)
    ledger.add(finished(0, model="interrupting"))
    ledger.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
    ledger.add(finished(1))
    ledger.add(finished(2))
    ledger.start()
    ledger.close()
    costs = _costs_stored(path)
    assert sorted(costs) == ["req-0", "req-1", "req-2", "req-3", "req-4"]
    for n in range(1, 5):  # all served after the reload
        assert costs[f"req-{n}"][:2] == ((1000 * 1000.0 + 100 * 1000.0) / 1e6, True), n
