"""A ledger database made by the first schema (the wide usage_records, no version row)
keeps working: migrated once, when a LedgerStore first opens it, every record and
rollup kept."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.ledger import LedgerStore
from azure_openai_proxy.store.ledger_schema import LEDGER_VERSION

DAY = 1_796_212_800.0  # 2026-12-02T12:00:00Z

# Verbatim from store/ledger.py before the narrow row (main d951bdc): its schema and how
# it wrote a record (the rollups included).
_V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    time REAL NOT NULL, request_id TEXT NOT NULL, key_id TEXT, team_id TEXT, model TEXT,
    deployment TEXT, endpoint TEXT, route TEXT NOT NULL, status INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL, upstream_ms REAL, total_ms REAL NOT NULL, stream INTEGER NOT NULL,
    attempts INTEGER NOT NULL, usage_source TEXT NOT NULL, priced INTEGER NOT NULL,
    day TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS usage_records_request ON usage_records (request_id);
CREATE INDEX IF NOT EXISTS usage_records_time ON usage_records (time);
CREATE TABLE IF NOT EXISTS usage_rollups (
    day TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
    requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    PRIMARY KEY (day, kind, id)
);
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY, version INTEGER NOT NULL);
INSERT OR IGNORE INTO schema_versions (component, version) VALUES ('keys', 1);
"""
_V1_INSERT = (
    "INSERT OR IGNORE INTO usage_records (time, request_id, key_id, team_id, model, deployment, "
    "endpoint, route, status, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, "
    "cost_usd, upstream_ms, total_ms, stream, attempts, usage_source, priced, day) VALUES "
    "(?, ?, nullif(?, ''), nullif(?, ''), nullif(?, ''), nullif(?, ''), nullif(?, ''), "
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_V1_ROLLUP = (
    "INSERT INTO usage_rollups VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?) ON CONFLICT (day, kind, id) "
    "DO UPDATE SET requests = requests + 1, cost_usd = cost_usd + excluded.cost_usd")

OLD = [
    UsageRecord(DAY, "old-1", "k1", "t1", "gpt-4o", "dep", "https://e/", "chat/completions", 200,
                10, 2, 5, 1, 0.5, 12.5, 20.0, True, 1, "measured", True),
    UsageRecord(DAY + 86400, "old-2", None, None, None, None, None, "models", 404, total_ms=1.0),
    UsageRecord(DAY + 1, "old-3", "k2", None, "dall-e-3", "img", "https://e/",
                "images/generations", 200, cost_usd=0.0, upstream_ms=None, total_ms=9.0,
                stream=False, attempts=2, usage_source="estimated", priced=False),
]


def _old_database(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_V1_SCHEMA)
        for r in OLD:
            day = "2026-12-03" if r.time >= DAY + 43200 else "2026-12-02"
            db.execute(_V1_INSERT, (r.time, r.request_id, r.key_id or "", r.team_id or "",
                                    r.model or "", r.deployment or "", r.endpoint or "", r.route,
                                    r.status, r.prompt_tokens, r.cached_tokens,
                                    r.completion_tokens, r.reasoning_tokens, r.cost_usd,
                                    r.upstream_ms, r.total_ms, int(r.stream), r.attempts,
                                    r.usage_source, int(r.priced), day))
            if r.key_id:
                db.execute(_V1_ROLLUP, (day, "key", r.key_id, r.prompt_tokens, r.cached_tokens,
                                        r.completion_tokens, r.reasoning_tokens, r.cost_usd))
    finally:
        db.close()


def test_a_first_schema_database_is_migrated_with_every_record(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    _old_database(path)
    store = LedgerStore.open(path)
    try:
        assert store.records() == sorted(OLD, key=lambda r: r.time)
        new = UsageRecord(DAY + 2, "new-1", "k1", "t1", "gpt-4o", "dep", "https://e/",
                          "chat/completions", 200, 1, 0, 1, 0, 0.25, total_ms=2.0,
                          usage_source="measured")
        assert store.write([OLD[0], new]) == 1  # an old record replayed still counts once
        by_key = {r["key"]: (r["requests"], r["cost_usd"], r["estimated"], r["unpriced"])
                  for r in store.usage("key", 0)}
        assert by_key == {"k1": (2, 0.75, 0, 0), "k2": (1, 0.0, 1, 1), None: (1, 0.0, 0, 0)}
        assert [(r["day"], r["requests"]) for r in store.usage("day", 0)] == [
            ("2026-12-02", 3), ("2026-12-03", 1)]
        assert sorted(store.daily_spend("2026-12-01")) == [
            ("key", "k1", "2026-12-02", 0.75), ("key", "k2", "2026-12-02", 0.0),
            ("team", "t1", "2026-12-02", 0.25)]
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "usage_records_v1" not in tables
        assert db.execute("SELECT version FROM schema_versions WHERE component = 'ledger'"
                          ).fetchone() == (LEDGER_VERSION,)
        assert db.execute("SELECT version FROM schema_versions WHERE component = 'keys'"
                          ).fetchone() == (1,)
    finally:
        db.close()
    again = LedgerStore.open(path)  # a second open finds it current: nothing migrated twice
    try:
        assert again.count() == 4
    finally:
        again.close()


def test_two_processes_opening_a_first_schema_database_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    _old_database(path)
    opened: list[int] = []
    failures: list[BaseException] = []
    go = threading.Barrier(4)

    def open_it() -> None:
        try:
            go.wait()
            store = LedgerStore.open(path)
            opened.append(store.count())
            store.close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert opened == [3, 3, 3, 3]


def test_a_newer_schema_is_refused_not_written_over(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    LedgerStore.open(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE schema_versions SET version = ? WHERE component = 'ledger'",
               (LEDGER_VERSION + 1,))
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer than this gateway"):
        LedgerStore.open(path)


def test_a_report_on_a_first_schema_database_migrates_it_and_reads_every_record(
        tmp_path: Path) -> None:
    # A report (`usage`, /admin/usage) run after an upgrade, before the gateway's first
    # start: the first schema wrote no version row, so it was taken for "no ledger yet".
    path = tmp_path / "gw.db"
    _old_database(path)
    report = LedgerStore.open(path, create=False)
    try:
        assert report.records() == sorted(OLD, key=lambda r: r.time)
    finally:
        report.close()


def test_a_report_on_an_empty_database_still_makes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    path.touch()
    with pytest.raises(sqlite3.OperationalError, match="no usage ledger yet"):
        LedgerStore.open(path, create=False)
    assert path.stat().st_size == 0
