"""The usage ledger in SQLite: raw records, daily rollups, retention, queries.

Tables:

    usage_records   one row per request (UsageRecord's fields); `request_id` is unique,
                    so a batch written twice (a spool replayed after a crash) counts once
    usage_rollups   (day, kind, id) -> requests, tokens, cost; kind is key, team or model.
                    Updated in the same transaction as the records it sums, from exactly
                    the rows that transaction inserted. Budgets read these.

The writer's rows (`LedgerRow`) are plain tuples in the table's column order, `day`
included, with "" for a missing key, team, model, deployment or endpoint (stored as
NULL): the sqlite3 module binds str, int and float directly, while every None or bool
goes through its adapter lookup (a formatted AttributeError each, ~3,000 instructions).
A batch's rollups are summed in Python, one upsert per (day, kind, id); only a batch
with rows already in the table (a spool replayed twice) is summed in SQL from the rows
inserted.

`LedgerStore` is used from one thread at a time (the gateway's ledger writer, or the CLI).
Every method raises `sqlite3.Error` as it comes: the writer decides what a failure means.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import fields
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Literal

from azure_openai_proxy.governance.budget import day_of
from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.sqlite import connect

__all__ = ["GROUPINGS", "Grouping", "LedgerRow", "LedgerStore", "UsageRow", "record_of", "row_of"]

_FIELDS = tuple(f.name for f in fields(UsageRecord))
_ROW = attrgetter(*_FIELDS)
# time, request_id, key_id, team_id, model, deployment, endpoint, route, status,
# prompt, cached, completion, reasoning tokens, cost_usd, upstream_ms, total_ms,
# stream (0/1), attempts, usage_source, priced (0/1), day (YYYY-MM-DD, UTC)
LedgerRow = tuple[float, str, str, str, str, str, str, str, int, int, int, int, int, float,
                  float | None, float, int, int, Literal["measured", "estimated", "none"], int,
                  str]
_OPTIONAL_TEXT = frozenset({"key_id", "team_id", "model", "deployment", "endpoint"})
_GROUP = itemgetter(20, 2, 3, 4)  # day, key, team, model
_SUMMED = tuple(itemgetter(i) for i in (9, 10, 11, 12, 13))  # tokens and cost
_SCHEMA = """
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
"""
_PLACES = "(" + ", ".join("nullif(?, '')" if f in _OPTIONAL_TEXT else "?" for f in _FIELDS) + ", ?)"
_INSERT = f"INSERT OR IGNORE INTO usage_records ({', '.join(_FIELDS)}, day) VALUES "
# Rows go in by statements of 128, 32, 8 or 1 rows (multi-row VALUES): per row, no
# statement of its own to step, reset and halt, and the GIL, which the sqlite3 module
# lets go around every step, changes hands once per statement rather than once per row
# (each time the event loop has it, the writer waits up to the 5 ms switch interval).
# Each size is prepared once per connection (~45,000 instructions per row of VALUES).
_INSERTS = tuple((size, _INSERT + ", ".join([_PLACES] * size)) for size in (128, 32, 8, 1))
_UPSERT = """
INSERT INTO usage_rollups (day, kind, id, requests, prompt_tokens, cached_tokens,
                           completion_tokens, reasoning_tokens, cost_usd)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, kind, id) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cost_usd = cost_usd + excluded.cost_usd
"""
_ROLLUP = """
INSERT INTO usage_rollups (day, kind, id, requests, prompt_tokens, cached_tokens,
                           completion_tokens, reasoning_tokens, cost_usd)
SELECT day, ?, {column}, count(*), sum(prompt_tokens), sum(cached_tokens),
       sum(completion_tokens), sum(reasoning_tokens), sum(cost_usd)
FROM usage_records WHERE rowid > ? AND {column} IS NOT NULL GROUP BY day, {column}
ON CONFLICT (day, kind, id) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cost_usd = cost_usd + excluded.cost_usd
"""
_ROLLUP_KINDS = (("key", "key_id"), ("team", "team_id"), ("model", "model"))

Grouping = Literal["key", "team", "model", "deployment", "day"]
GROUPINGS: tuple[Grouping, ...] = ("key", "team", "model", "deployment", "day")
_GROUP_COLUMN = {"key": "key_id", "team": "team_id", "model": "model",
                 "deployment": "deployment", "day": "day"}
UsageRow = dict[str, Any]


class LedgerStore:
    """The ledger's tables in one SQLite database."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.executescript(_SCHEMA)

    @classmethod
    def open(cls, path: Path, *, busy_timeout_ms: int | None = None) -> LedgerStore:
        connection = connect(path)
        if busy_timeout_ms is not None:
            connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        return cls(connection)

    def close(self) -> None:
        self._db.close()

    def write(self, records: Sequence[UsageRecord]) -> int:
        """Insert `records` (those already there are skipped) and add the new ones to the
        rollups, in one transaction. Returns how many were new."""
        return self.write_rows([row_of(r) for r in records])

    def write_rows(self, rows: Sequence[LedgerRow]) -> int:
        """`write` for rows the writer made (`LedgerRow`)."""
        if not rows:
            return 0
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # a busy database raises here, nothing to undo
        try:
            last = db.execute("SELECT coalesce(max(rowid), 0) FROM usage_records").fetchone()[0]
            before = db.total_changes
            _insert(db, rows)
            inserted = db.total_changes - before
            if inserted == len(rows):
                db.executemany(_UPSERT, _rollups(rows))
            elif inserted:
                for kind, column in _ROLLUP_KINDS:
                    db.execute(_ROLLUP.format(column=column), (kind, last))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return inserted

    def delete_before(self, cutoff: float) -> int:
        """Retention: raw records older than `cutoff` (epoch seconds) go; rollups stay."""
        cursor = self._db.execute("DELETE FROM usage_records WHERE time < ?", (cutoff,))
        return cursor.rowcount

    def daily_spend(self, since_day: str) -> list[tuple[str, str, str, float]]:
        """(kind, id, day, cost) of keys and teams from `since_day` (YYYY-MM-DD) on."""
        rows = self._db.execute(
            "SELECT kind, id, day, cost_usd FROM usage_rollups "
            "WHERE day >= ? AND kind IN ('key', 'team')", (since_day,)).fetchall()
        return [(str(k), str(i), str(d), float(c)) for k, i, d, c in rows]

    def spend_since(self, since_day: str) -> list[tuple[str, str, str, float]]:
        """(kind, id, day, cost) of keys and teams: a row per day from `since_day` on, and
        one per owner summing every day before it, under the day `0000-00-00`. The sums
        are SQLite's (it runs without the GIL): the rows read are few whatever the
        ledger's age."""
        rows = self._db.execute(
            "SELECT kind, id, CASE WHEN day >= ?1 THEN day ELSE '0000-00-00' END AS d, "
            "sum(cost_usd) FROM usage_rollups WHERE kind IN ('key', 'team') "
            "GROUP BY kind, id, d", (since_day,)).fetchall()
        return [(str(k), str(i), str(d), float(c)) for k, i, d, c in rows]

    def spend_and_recorded(self, since_day: str, request_ids: Collection[str],
                           ) -> tuple[list[tuple[str, str, str, float]], set[str]]:
        """`spend_since(since_day)`, and which of `request_ids` the ledger has, read from
        one snapshot of the database: a record is either in both or in neither."""
        db = self._db
        db.execute("BEGIN")
        try:
            spend = self.spend_since(since_day)
            ids = list(request_ids)
            found: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                found.update(row[0] for row in db.execute(
                    "SELECT request_id FROM usage_records WHERE request_id IN "
                    f"({', '.join('?' * len(chunk))})", chunk))
        finally:
            db.execute("COMMIT")
        return spend, found

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM usage_records").fetchone()[0])

    def records(self, since: float = 0.0) -> list[UsageRecord]:
        rows = self._db.execute(
            f"SELECT {', '.join(_FIELDS)} FROM usage_records WHERE time >= ? ORDER BY time",
            (since,)).fetchall()
        return [_record(row) for row in rows]

    def usage(self, by: Grouping, since: float, until: float | None = None) -> list[UsageRow]:
        """Totals grouped `by` for records from `since` to `until` (epoch seconds), the
        largest spend first (by day: in date order)."""
        column = _GROUP_COLUMN[by]
        order = "grp" if by == "day" else "spent DESC, grp"
        rows = self._db.execute(
            f"SELECT {column} AS grp, count(*), sum(prompt_tokens), sum(cached_tokens), "
            "sum(completion_tokens), sum(reasoning_tokens), sum(cost_usd) AS spent, "
            "sum(usage_source = 'estimated'), sum(priced = 0) "
            "FROM usage_records WHERE time >= ? AND time < ? "
            f"GROUP BY grp ORDER BY {order}",
            (since, until if until is not None else time.time() + 86400)).fetchall()
        return [
            {by: grp, "requests": n, "prompt_tokens": p, "cached_tokens": c,
             "completion_tokens": o, "reasoning_tokens": r, "cost_usd": round(cost, 6),
             "estimated": est, "unpriced": unpriced}
            for grp, n, p, c, o, r, cost, est, unpriced in rows
        ]


def _insert(db: sqlite3.Connection, rows: Sequence[LedgerRow]) -> None:
    """INSERT OR IGNORE `rows`, by the largest statements of `_INSERTS` that fit (and that
    the database's limit of parameters allows)."""
    most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // (len(_FIELDS) + 1)
    start, left = 0, len(rows)
    for size, sql in _INSERTS:
        if size > most:
            continue
        while left >= size:
            db.execute(sql, list(chain.from_iterable(rows[start:start + size])))
            start, left = start + size, left - size


def row_of(record: UsageRecord) -> LedgerRow:
    """A record as the writer's row (its UTC day computed)."""
    (time_, request_id, key_id, team_id, model, deployment, endpoint, route, status, prompt,
     cached, completion, reasoning, cost, upstream_ms, total_ms, stream, attempts, source,
     priced) = _ROW(record)
    return (time_, request_id, key_id or "", team_id or "", model or "", deployment or "",
            endpoint or "", route, status, prompt, cached, completion, reasoning, cost,
            upstream_ms, total_ms, int(stream), attempts, source, int(priced), day_of(time_))


def record_of(row: LedgerRow) -> UsageRecord:
    """A row as the record it stores (`row_of`'s inverse)."""
    (time_, request_id, key_id, team_id, model, deployment, endpoint, route, status, prompt,
     cached, completion, reasoning, cost, upstream_ms, total_ms, stream, attempts, source,
     priced, _) = row
    return UsageRecord(time_, request_id, key_id or None, team_id or None, model or None,
                       deployment or None, endpoint or None, route, status, prompt, cached,
                       completion, reasoning, cost, upstream_ms, total_ms, bool(stream),
                       attempts, source, bool(priced))


def _rollups(rows: Sequence[LedgerRow]) -> list[tuple[str, str, str, int, int, int, int, int, float]]:
    """The upserts of a batch: one per (day, kind, id), from its (day, key, team, model)
    groups."""
    groups: dict[tuple[str, str, str, str], list[LedgerRow]] = {}
    for row in rows:
        group = _GROUP(row)
        members = groups.get(group)
        if members is None:
            groups[group] = [row]
        else:
            members.append(row)
    totals: dict[tuple[str, str, str], list[float]] = {}
    for (day, key_id, team_id, model), members in groups.items():
        sums = [len(members), *(sum(map(get, members)) for get in _SUMMED)]
        for kind, owner in (("key", key_id), ("team", team_id), ("model", model)):
            if owner:
                total = totals.get((day, kind, owner))
                if total is None:
                    totals[(day, kind, owner)] = sums[:]
                else:
                    for i, value in enumerate(sums):
                        total[i] += value
    return [(day, kind, owner, int(n), int(p), int(c), int(o), int(r), cost)
            for (day, kind, owner), (n, p, c, o, r, cost) in totals.items()]


def _record(row: Iterable[Any]) -> UsageRecord:
    values = dict(zip(_FIELDS, row, strict=True))
    values["stream"] = bool(values["stream"])
    values["priced"] = bool(values["priced"])
    return UsageRecord(**values)
