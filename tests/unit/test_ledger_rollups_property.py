"""The ledger's daily rollups equal the raw records' sums, whatever happened between:
random records (keys, teams, models, days, usage shapes, a request written twice),
written by a running writer while the database is locked by another connection between
batches (the batches spool, then replay), prices reloaded, and retention deleting the
raw records of days past it (their rollups stay: only the days it keeps are compared)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import Price, PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import LedgerStore

NOW = 1_796_212_800.0  # 2026-12-02T12:00:00Z
_DAY_MS = 86_400_000.0
_RETENTION_DAYS = 2

_USAGES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"prompt_tokens": st.integers(0, 5000),
                           "completion_tokens": st.integers(0, 5000)}),
    st.fixed_dictionaries({
        "prompt_tokens": st.integers(0, 5000), "completion_tokens": st.integers(0, 5000),
        "total_tokens": st.integers(0, 10000),
        "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(-5, 6000),
                                                        "audio_tokens": st.just(0)}),
        "completion_tokens_details": st.fixed_dictionaries(
            {"reasoning_tokens": st.integers(-5, 6000)})}),
    st.fixed_dictionaries({"prompt_tokens": st.integers(0, 5000),
                           "completion_tokens": st.integers(0, 5000),
                           "estimated": st.just(True)}),
    st.fixed_dictionaries({"input_tokens": st.integers(0, 5000),
                           "output_tokens": st.integers(0, 5000)}),
)
_RECORD = st.tuples(st.sampled_from(["k1", "k2", "k3", None]),
                    st.sampled_from(["t1", "t2", None]),
                    st.sampled_from(["gpt-4o", "gpt-4o-mini", "unpriced-model", None]),
                    st.integers(0, 3),  # days before NOW it arrived (3: past the retention)
                    st.floats(0, 0.99),  # and where in that day
                    _USAGES, st.booleans())
_STEP = st.one_of(
    st.tuples(st.just("add"), _RECORD),
    st.tuples(st.just("again"), st.integers(0, 10_000)),  # a request written twice
    st.tuples(st.just("lock"), st.none()),
    st.tuples(st.just("unlock"), st.none()),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("reload"), st.floats(0.5, 20)),
)


Spec = tuple[str | None, str | None, str | None, int, float, dict[str, Any] | None, bool]


def _finished(n: int, spec: Spec) -> RequestRecord:
    key, team, model, days, within, usage, stream = spec
    return RequestRecord(f"req-{n}", "POST", route="chat/completions", model=model,
                         deployment="dep", endpoint="https://e/", status=200,
                         total_ms=(days + within) * _DAY_MS, usage=usage,
                         key_id=key, team_id=team, stream=stream)


_BY_OWNER = """
SELECT date(r.time, 'unixepoch') AS d, ?, l.{column}, count(*), sum(r.prompt_tokens),
       sum(r.cached_tokens), sum(r.completion_tokens), sum(r.reasoning_tokens), sum(r.cost_usd)
FROM usage_records AS r JOIN usage_labels AS l ON l.id = r.label
WHERE l.{column} != '' AND d >= ? GROUP BY d, l.{column}
"""


def _compare(path: Path, first_day: str) -> int:
    db = sqlite3.connect(path)
    try:
        raw = {}
        for kind, column in (("key", "key_id"), ("team", "team_id"), ("model", "model")):
            for day, _, owner, *sums in db.execute(_BY_OWNER.format(column=column),
                                                    (kind, first_day)):
                raw[(day, kind, owner)] = sums
        rolled = {(day, kind, owner): sums for day, kind, owner, *sums in db.execute(
            "SELECT day, kind, id, requests, prompt_tokens, cached_tokens, completion_tokens, "
            "reasoning_tokens, cost_usd FROM usage_rollups WHERE day >= ?", (first_day,))}
        count = db.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    finally:
        db.close()
    assert rolled.keys() == raw.keys()
    for group, sums in raw.items():
        assert rolled[group][:5] == sums[:5], group
        assert rolled[group][5] == pytest.approx(sums[5], rel=1e-9, abs=1e-12), group
    return int(count)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_STEP, max_size=40), st.sampled_from([1, 3, 7, 2000]))
def test_the_rollups_are_the_raw_records_sums_after_outages_replays_and_retention(
    steps: list[tuple[str, object]], batch: int,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "gw.db"
        guard = BudgetGuard(clock=lambda: NOW)
        writer_ = _writer(path, guard, batch)
        writer_.start()
        lock: sqlite3.Connection | None = None
        added: list[RequestRecord] = []
        kept: set[str] = set()
        try:
            for step, argument in steps:
                if step == "add":
                    spec: Spec = argument  # type: ignore[assignment]
                    record = _finished(len(added), spec)
                    added.append(record)
                    writer_.add(record)
                    if spec[3] < _RETENTION_DAYS:
                        kept.add(record.request_id)
                elif step == "again" and added:
                    assert isinstance(argument, int)
                    writer_.add(added[argument % len(added)])
                elif step == "lock" and lock is None:
                    lock = sqlite3.connect(path, isolation_level=None)
                    lock.execute("BEGIN IMMEDIATE")
                    assert writer_.flush()  # what is queued goes to the spool
                elif step == "unlock" and lock is not None:
                    lock.execute("ROLLBACK")
                    lock.close()
                    lock = None
                elif step == "flush":
                    assert writer_.flush()
                elif step == "reload":
                    assert isinstance(argument, float)
                    writer_.reconfigure(PriceTable({"gpt-4o": Price(argument, 2 * argument,
                                                                    argument / 2)}), {})
            if lock is not None:
                lock.execute("ROLLBACK")
                lock.close()
                lock = None
            assert writer_.flush() and writer_.flush()
        finally:
            if lock is not None:
                lock.close()
            writer_.close()
        assert not writer_.spool_path.exists()
        store = LedgerStore.open(path)
        try:
            recorded = {r.request_id for r in store.records()}
        finally:
            store.close()
        # Every record is there, but those of the days past the retention (deleted when
        # the writer first maintained after them, or kept when they came later).
        assert kept <= recorded <= {r.request_id for r in added}
        _compare(path, "2026-12-01")  # NOW's day and the one before: never deleted


def _writer(path: Path, guard: BudgetGuard, batch: int) -> LedgerWriter:
    return LedgerWriter(path, PriceTable.shipped(), {("https://e/", "dep"): "gpt-4o-mini"},
                        guard, clock=lambda: NOW, batch_size=batch,
                        retention_days=_RETENTION_DAYS, busy_timeout_ms=5, interval=0.005)
