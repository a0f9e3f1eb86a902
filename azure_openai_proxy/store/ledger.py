"""The usage ledger in SQLite: raw records, daily rollups, retention, queries.

Tables (store/ledger_schema.py has their columns, indexes and migration):

    usage_records   one narrow row per request; `request_id` is unique, so a batch
                    written twice (a spool replayed after a crash) counts once
    usage_labels    what repeats between records (key, team, model, deployment,
                    endpoint, route), one row per combination, named by its id
    usage_rollups   (day, kind, id) -> requests, tokens, cost; kind is key, team or model.
                    Updated in the same transaction as the records it sums, from exactly
                    the rows that transaction inserted. Budgets read these.

The writer's rows (`LedgerRow`) are plain tuples whose first 13 values are exactly the
parameters a row binds, in the table's order: a statement's parameters are the rows'
slices joined in C (`_bound`), no Python per row. The label id is the store's
(`label_id`: a new combination is inserted and committed at once, outside any batch, so
an id once known stays valid for the database file); 0 when the row's maker did not
know it (a spooled record, a `UsageRecord`), then `write_rows` looks it up from the row's
labels (a tuple of str, "" for a missing key, team, model, deployment or endpoint).
Stream, priced and the usage's source are packed as `flags` (`SOURCE_CODE`). The sqlite3
module binds str, int and float directly, while every None or bool goes through its
adapter lookup (a formatted AttributeError each, ~3,000 instructions); a row binds 13
parameters, one of them text. A batch's rollups are one upsert per (day, kind, id), summed
by one of three paths. The writer's own batch of one day (`_one_day`): of one label id
(the usual one), its counts by SQLite over the rowids it just took (one aggregate, no
GROUP BY, ~1,600 instructions a row stepped without the GIL, where `_rollups` costs ~2,300
holding it) and its cost in C (SQLite's sum() of floats adds otherwise than Python's on
some pairs of versions); of several, in C grouped by the label id alone. Any other batch in C (the rows
sorted and grouped per (day, label id), each group's columns summed: `_rollups`); a
batch with rows already in the table (a spool replayed twice) in SQL from the rows
inserted (SQLite's GROUP BY over the batch costs ~14,600 instructions a row).

`LedgerStore` is used from one thread at a time (the gateway's ledger writer, or the CLI).
Every method raises `sqlite3.Error` as it comes: the writer decides what a failure means.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import fields
from functools import lru_cache, reduce
from itertools import groupby
from operator import iadd, itemgetter
from pathlib import Path
from typing import Any, Literal

from azure_openai_proxy.governance.budget import day_of
from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.ledger_schema import LedgerBehind, prepare, require_current
from azure_openai_proxy.store.sqlite import LockWaits, connect

__all__ = ["FULL_BATCH", "GROUPINGS", "PRUNE_CHUNK", "SOURCE_CODE", "Grouping", "Labels",
           "LedgerRow", "LedgerStore", "UsageRow", "record_of", "row_of"]

# The writer's retention deletes this many raw records a cycle at most: the write lock
# held ~50-100 ms, where a prune in one statement held it for all (900,000 records, a few
# hours of a busy gateway or a retention lowered: 2.3 s; every other worker's batch
# waiting for it past its busy timeout goes to the spool) and grew the WAL by all.
PRUNE_CHUNK = 20_000

_FIELDS = tuple(f.name for f in fields(UsageRecord))
# (key_id, team_id, model, deployment, endpoint, route), "" for none
Labels = tuple[str, str, str, str, str, str]
# time, request_id, label id (0: not known yet), status, prompt, cached, completion,
# reasoning tokens, cost_usd, upstream_ms, total_ms, attempts, flags (the 13 bound, in the
# table's order), then the labels and the day (YYYY-MM-DD, UTC): neither stored (the
# label id names the labels; the rollups' day is SQLite's from the time), both read when
# the row is spooled or its cost handed to the budgets
LedgerRow = tuple[float, str, int, int, int, int, int, int, float, float | None, float, int,
                  int, Labels, str]
Source = Literal["measured", "estimated", "none"]
# flags: stream (1) | priced (2) | the usage's source's code << 2 (`SOURCE_CODE`)
SOURCE_CODE: dict[str, int] = {"none": 0, "measured": 1, "estimated": 2}
_SOURCES: tuple[Source, ...] = ("none", "measured", "estimated")
_COLUMNS = ("time, request_id, label, status, prompt_tokens, cached_tokens, completion_tokens, "
            "reasoning_tokens, cost_usd, upstream_ms, total_ms, attempts, flags")
_WIDTH = 13  # parameters a row binds: its first 13 values
_bound = itemgetter(slice(0, _WIDTH))
_label_of = itemgetter(2)
_day_of_row = itemgetter(14)
_group_of = itemgetter(14, 2)  # (day, label id): a rollup group
_SUMMED = tuple(itemgetter(i) for i in (4, 5, 6, 7, 8))  # tokens and cost
_PLACES = "(" + ", ".join(["?"] * _WIDTH) + ")"
_INSERT = f"INSERT OR IGNORE INTO usage_records ({_COLUMNS}) VALUES "
# The writer's full batch (gateway/ledger.py): the rows it hands `write_rows` at once
# under load, and the largest INSERT (26,000 parameters: SQLite's default limit since
# 3.32 is 32,766; a lower one skips it, `_insert`).
FULL_BATCH = 2000
# Rows go in by statements of 2,000, 256, 64, 16, 4 or 1 rows (multi-row VALUES; a full
# batch of the writer's is one): per row, no
# statement of its own to step, reset and halt, and the GIL, which the sqlite3 module
# lets go several times in every statement (its prepare or cache look-up, each step,
# the reset), changes hands once per statement rather than once per row (each time the
# event loop has it, the writer waits up to the switch interval). A full batch was
# eight statements (1,024 + 3 x 256 + 3 x 64 + 16): one cuts the writer's GIL re-takes
# from ~88 to ~54 a batch (bench/README.md, session 28). Each size is prepared once per
# connection (the sqlite3 module's statement cache; the 2,000-row one ~3.5 MB, the
# 1,024-row one it replaces ~2.4 MB).
_INSERTS = tuple((size, _INSERT + ", ".join([_PLACES] * size))
                 for size in (FULL_BATCH, 256, 64, 16, 4, 1))
# The label ids a store keeps in memory: every combination of key, model, deployment
# and route seen is one, and client-chosen model names that reach Azure (a default
# endpoint's dynamic deployments) would grow it for the life of the process.
_KNOWN_LABELS = 4096  # as the pricer's own (gateway/ledgerrows.py)
_LABELS = ("SELECT id, key_id, team_id, model, deployment, endpoint, route FROM usage_labels "
           f"ORDER BY id DESC LIMIT {_KNOWN_LABELS}")
_NEW_LABEL = ("INSERT OR IGNORE INTO usage_labels (key_id, team_id, model, deployment, endpoint, "
              "route) VALUES (?, ?, ?, ?, ?, ?)")
_LABEL_ID = ("SELECT id FROM usage_labels WHERE key_id = ? AND team_id = ? AND model = ? "
             "AND deployment = ? AND endpoint = ? AND route = ?")
_UPSERT = """
INSERT INTO usage_rollups (day, kind, id, requests, prompt_tokens, cached_tokens,
                           completion_tokens, reasoning_tokens, cost_usd)
VALUES {values}
ON CONFLICT (day, kind, id) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cost_usd = cost_usd + excluded.cost_usd
"""
# A record's UTC day in SQL, as the writer's (budget.day_of: Python's datetime, which
# rounds the time to the microsecond): date(r.time, 'unixepoch') rounds it to the
# millisecond, so a record of a day's last half millisecond was of the next day in the
# report by day and in the rollups summed by SQL, of its own in the others. The whole
# seconds, plus one when the fraction rounds to a million microseconds (SQLite's round()
# and Python's differ on a tie, x.5, but not at 999,999.5: both go up).
_DAY = ("date(CAST(r.time AS INTEGER) + (round((r.time - CAST(r.time AS INTEGER)) * 1e6) "
        ">= 1e6), 'unixepoch')")
_ROLLUP = """
INSERT INTO usage_rollups (day, kind, id, requests, prompt_tokens, cached_tokens,
                           completion_tokens, reasoning_tokens, cost_usd)
SELECT """ + _DAY + """ AS d, ?, l.{column}, count(*), sum(r.prompt_tokens),
       sum(r.cached_tokens), sum(r.completion_tokens), sum(r.reasoning_tokens), sum(r.cost_usd)
FROM usage_records AS r JOIN usage_labels AS l ON l.id = r.label
WHERE r.rowid > ? AND l.{column} != '' GROUP BY d, l.{column}
ON CONFLICT (day, kind, id) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    cached_tokens = cached_tokens + excluded.cached_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
    cost_usd = cost_usd + excluded.cost_usd
"""
# The writer's batch of one label id and one UTC day (a worker's records between two
# wakes of its writer, with few keys) has its counts summed by SQLite, stepped without
# the GIL, over the rows it inserted: one aggregate, no GROUP BY (integers: exact). Not
# its cost: SQLite's sum() of floats is compensated since 3.43, Python's since 3.12, so
# SQLite's would differ from `_rollups`' in the last bits wherever the two disagree
# (3.12 on Debian bookworm's SQLite 3.40, 3.11 on a recent one); Python sums it.
_BATCH_SUMS = ("SELECT count(*), sum(prompt_tokens), sum(cached_tokens), "
               "sum(completion_tokens), sum(reasoning_tokens) "
               "FROM usage_records WHERE rowid BETWEEN ? AND ?")
_cost_of = itemgetter(8)
_ROLLUP_KINDS = (("key", "key_id"), ("team", "team_id"), ("model", "model"))
_ROLLUPS = tuple((kind, _ROLLUP.format(column=column)) for kind, column in _ROLLUP_KINDS)
# A record as UsageRecord's fields, from usage_records joined with usage_labels.
_RECORD = ("SELECT r.time, r.request_id, l.key_id, l.team_id, l.model, l.deployment, "
           "l.endpoint, l.route, r.status, r.prompt_tokens, r.cached_tokens, "
           "r.completion_tokens, r.reasoning_tokens, r.cost_usd, r.upstream_ms, r.total_ms, "
           "r.attempts, r.flags FROM usage_records AS r JOIN usage_labels AS l ON l.id = r.label")

Grouping = Literal["key", "team", "model", "deployment", "day"]
GROUPINGS: tuple[Grouping, ...] = ("key", "team", "model", "deployment", "day")
_GROUP_COLUMN = {"key": "nullif(l.key_id, '')", "team": "nullif(l.team_id, '')",
                 "model": "nullif(l.model, '')", "deployment": "nullif(l.deployment, '')",
                 "day": _DAY}
UsageRow = dict[str, Any]


class LedgerStore:
    """The ledger's tables in one SQLite database."""

    def __init__(self, connection: sqlite3.Connection, *, read_only: bool = False,
                 waits: LockWaits | None = None) -> None:
        self._db = connection
        (require_current if read_only else prepare)(connection)
        # labels -> id, read from usage_labels at the first look-up, and the database's
        # schema_version then: a database restored in place (the backup API, `.restore`)
        # keeps its file and inode but not its label ids, and bumps the version
        self._labels: dict[Labels, int] | None = None
        self._schema = -1
        # bumped each time the ids known are let go: a caller that remembers ids given
        # under an earlier value must ask again
        self.label_epoch = 0
        self._busy_ms = int(connection.execute("PRAGMA busy_timeout").fetchone()[0])
        self._waits = LockWaits() if waits is None else waits

    @classmethod
    def open(cls, path: Path, *, busy_timeout_ms: int | None = None,
             create: bool = True, waits: LockWaits | None = None) -> LedgerStore:
        """`create=False`, for a report: opened read-only, a database that is not there
        is an error (`connect`), as is one without the ledger's current tables.
        `waits`: shared by the stores a writer opens in turn (`LockWaits`)."""
        connection = connect(path, create=create)
        if busy_timeout_ms is not None:
            connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        try:
            return cls(connection, read_only=not create, waits=waits)
        except LedgerBehind:
            # A ledger of an older schema, e.g. a report run after an upgrade and before
            # the gateway's first start: migrated as that start would (a write, but of a
            # ledger that is there, never one made where none was).
            connection.close()
            return cls.open(path, busy_timeout_ms=busy_timeout_ms, create=True, waits=waits)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        self._db.close()

    def write(self, records: Sequence[UsageRecord]) -> int:
        """Insert `records` (those already there are skipped) and add the new ones to the
        rollups, in one transaction. Returns how many were new."""
        return self.write_rows([row_of(r) for r in records])

    def write_rows(self, rows: Sequence[LedgerRow], *, priced: bool = False) -> int:
        """`write` for rows the writer made (`LedgerRow`). `priced`: made by the writer's
        pricer just now (its counts ints, its cost a float), so a batch of one label and
        day may be summed by SQLite; other rows (a spool's lines) are summed in Python,
        which refuses a value that is not a number where SQLite would take it."""
        if not rows:
            return 0
        for _ in range(3):
            ids = set(map(_label_of, rows))  # C
            if 0 in ids:  # a spooled record's, or a UsageRecord's
                rows = [row if row[2] else (*row[:2], self.label_id(row[13]), *row[3:])
                        for row in rows]
                ids = set(map(_label_of, rows))
            inserted = self._write_labelled(rows, len(ids) if priced else 0)
            if inserted is not None:
                return inserted
            # Restored in place since the ids were read: every id asked again.
            self._labels = None
            self.label_epoch += 1
            rows = [(*row[:2], 0, *row[3:]) for row in rows]
        raise sqlite3.OperationalError("the ledger's database keeps being replaced")

    def _write_labelled(self, rows: Sequence[LedgerRow], labels: int) -> int | None:
        """`write_rows` for rows whose label ids are all known (`labels`: how many
        there are, 0 for rows not priced by the writer): how many were new, or None
        (nothing written) when the database's schema_version is no longer the one the
        ids were read under."""
        db = self._db
        # Each statement is a step the sqlite3 module takes without the GIL, which it
        # then waits to have back: a batch runs as few as there can be (begin, the
        # version, the inserts, one upsert, commit: 5 for 256 rows or 2,000; 6 with the
        # one-label batch's sums).
        self._write("BEGIN IMMEDIATE")  # a busy database raises here, nothing to undo
        try:
            # Read under the write lock: a restore cannot come between it and the rows.
            if self._version() != self._schema:
                db.execute("ROLLBACK")
                return None
            inserted, last = self._insert(rows)
            if inserted == len(rows):
                sums = self._one_day(rows, last, labels) if labels else None
                self._upsert(sums if sums is not None else _rollups(rows))
            elif inserted:  # some were there already (a spool replayed twice): SQLite's
                # The write lock is held: the rows inserted are the table's last rowids.
                last = db.execute("SELECT max(rowid) - ? FROM usage_records",
                                  (inserted,)).fetchone()[0]
                for kind, sql in _ROLLUPS:
                    db.execute(sql, (kind, last))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return inserted

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA schema_version").fetchone()[0])

    def _insert(self, rows: Sequence[LedgerRow]) -> tuple[int, int]:
        """INSERT OR IGNORE `rows`, by the largest statements of `_INSERTS` that fit (and
        that the database's limit of parameters allows): how many were new, and the
        rowid of the last row inserted. A
        statement's parameters are its rows' first 13 values joined in C, made just
        before it runs."""
        db = self._db
        most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _WIDTH
        inserted = start = last = 0
        for size, sql in _INSERTS:
            if size > most:
                continue
            while len(rows) - start >= size:
                # extended by each row's slice in C: a list extended by a tuple copies
                # it at once, where chain.from_iterable steps through every value
                params: list[object] = []
                reduce(iadd, map(_bound, rows[start:start + size]), params)
                cursor = db.execute(sql, params)
                inserted += cursor.rowcount
                last = cursor.lastrowid or last
                start += size
        return inserted, last

    def _one_day(self, rows: Sequence[LedgerRow], last: int, labels: int,
                 ) -> list[tuple[str, str, str, int, int, int, int, int, float]] | None:
        """`_rollups(rows)` for the writer's rows of `labels` label ids, all inserted
        just now with `last` the last one's rowid, when they are of one UTC day (None
        when not). One label id: its counts summed by SQLite (~1,600 instructions a
        row, without the GIL; `_rollups` ~2,300 holding it), its cost by Python.
        Several: `_rollups` grouping by the label id alone (an int key: no tuple made
        and compared per row, ~1,600 fewer a row with 3 or 100 labels; the same
        groups, in the same order)."""
        if len(set(map(_day_of_row, rows))) != 1:  # C: the pricer's rows share one str
            return None
        if labels > 1:
            return _rollups(rows, _label_of)
        # The write lock is held and the table has no AUTOINCREMENT: the rows inserted
        # took the rowids after the largest one, in order. Counted, not assumed.
        sums = self._db.execute(_BATCH_SUMS, (last - len(rows) + 1, last)).fetchone()
        if sums[0] != len(rows):
            return None
        cost = sum(map(_cost_of, rows))  # C: the additions `_rollups` makes, in its order
        return _totals([(rows[0][14], rows[0][13][:3], (*sums, cost))])

    def _upsert(self, sums: list[tuple[str, str, str, int, int, int, int, int, float]]) -> None:
        """The rollups' upserts as multi-row statements (as many rows as the database's
        limit of parameters allows): one step, not one per row."""
        db = self._db
        most = max(1, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 9)
        for start in range(0, len(sums), most):
            part = sums[start:start + most]
            params: list[object] = []
            reduce(iadd, part, params)
            db.execute(_upsert_sql(len(part)), params)

    def label_id(self, labels: Labels) -> int:
        """The id of a combination of labels, inserted (and committed at once, outside a
        batch's transaction: an id once given stays valid) when new. Not inside a
        transaction of this store's."""
        known = self._labels
        if known is None:
            self._schema = self._version()  # first: a restore after it is seen
            known = self._labels = {(k, t, m, d, e, r): i
                                    for i, k, t, m, d, e, r in self._db.execute(_LABELS)}
        label = known.get(labels)
        if label is None:
            if len(known) >= _KNOWN_LABELS:  # bounded: ids are looked up again after
                known.clear()
            self._write(_NEW_LABEL, labels)  # another writer's, if it is there
            label = known[labels] = int(self._db.execute(_LABEL_ID, labels).fetchone()[0])
        return label

    def delete_before(self, cutoff: float, most: int | None = None) -> int:
        """Retention: raw records older than `cutoff` (epoch seconds) go, the oldest
        `most` of them (None: all); rollups stay. How many went."""
        if most is None:
            return self._write("DELETE FROM usage_records WHERE time < ?", (cutoff,)).rowcount
        return self._write(
            "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records "
            "WHERE time < ? ORDER BY time LIMIT ?)", (cutoff, most)).rowcount

    def _write(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """A statement that takes the write lock (its first, or one in autocommit)."""
        return self._waits.execute(self._db, self._busy_ms, sql, params)

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
        rows = self._db.execute(f"{_RECORD} WHERE r.time >= ? ORDER BY r.time",
                                (since,)).fetchall()
        return [_record(row) for row in rows]

    def usage(self, by: Grouping, since: float, until: float | None = None) -> list[UsageRow]:
        """Totals grouped `by` for records from `since` to `until` (epoch seconds), the
        largest spend first (by day: in date order)."""
        column = _GROUP_COLUMN[by]
        order = "grp" if by == "day" else "spent DESC, grp"
        rows = self._db.execute(
            f"SELECT {column} AS grp, count(*), sum(r.prompt_tokens), sum(r.cached_tokens), "
            "sum(r.completion_tokens), sum(r.reasoning_tokens), sum(r.cost_usd) AS spent, "
            "sum(r.flags >> 2 = 2), sum(r.flags & 2 = 0) "
            "FROM usage_records AS r JOIN usage_labels AS l ON l.id = r.label "
            "WHERE r.time >= ? AND r.time < ? "
            f"GROUP BY grp ORDER BY {order}",
            (since, until if until is not None else time.time() + 86400)).fetchall()
        return [
            {by: grp, "requests": n, "prompt_tokens": p, "cached_tokens": c,
             "completion_tokens": o, "reasoning_tokens": r, "cost_usd": round(cost, 6),
             "estimated": est, "unpriced": unpriced}
            for grp, n, p, c, o, r, cost, est, unpriced in rows
        ]


def row_of(record: UsageRecord) -> LedgerRow:
    """A record as the writer's row (its UTC day computed; its label id 0: the store
    looks it up)."""
    labels = (record.key_id or "", record.team_id or "", record.model or "",
              record.deployment or "", record.endpoint or "", record.route)
    return (record.time, record.request_id, 0, record.status, record.prompt_tokens,
            record.cached_tokens, record.completion_tokens, record.reasoning_tokens,
            record.cost_usd, record.upstream_ms, record.total_ms, record.attempts,
            int(record.stream) | int(record.priced) << 1 | SOURCE_CODE[record.usage_source] << 2,
            labels, day_of(record.time))


def record_of(row: LedgerRow) -> UsageRecord:
    """A row as the record it stores (`row_of`'s inverse)."""
    (time_, request_id, _, status, prompt, cached, completion, reasoning, cost, upstream_ms,
     total_ms, attempts, flags, (key_id, team_id, model, deployment, endpoint, route), _) = row
    return UsageRecord(time_, request_id, key_id or None, team_id or None, model or None,
                       deployment or None, endpoint or None, route, status, prompt, cached,
                       completion, reasoning, cost, upstream_ms, total_ms, bool(flags & 1),
                       attempts, _SOURCES[flags >> 2], bool(flags & 2))


@lru_cache(maxsize=64)
def _upsert_sql(groups: int) -> str:
    """The upsert of `groups` rollup rows in one statement (each (day, kind, id) once)."""
    return _UPSERT.format(values=", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * groups))


def _rollups(rows: Sequence[LedgerRow], group_of: Callable[[LedgerRow], Any] = _group_of,
             ) -> list[tuple[str, str, str, int, int, int, int, int, float]]:
    """The upserts of a batch: one per (day, kind, id). Its rows grouped per (day, label
    id) in C (sorted, then `groupby`: a batch is nearly always a few groups, and sorted
    already; `group_of` the label id alone for rows known to be of one day), their
    tokens and cost summed in C; Python runs once per group, not per row."""
    groups = []
    for _, group in groupby(sorted(rows, key=group_of), group_of):
        members = list(group)
        groups.append((members[0][14], members[0][13][:3],
                       [len(members), *(sum(map(get, members)) for get in _SUMMED)]))
    return _totals(groups)


def _totals(groups: Iterable[tuple[str, Sequence[str], Sequence[float]]],
            ) -> list[tuple[str, str, str, int, int, int, int, int, float]]:
    """The upserts of (day, (key, team, model), sums) groups in this order: each
    owner's sums added up in it."""
    totals: dict[tuple[str, str, str], list[float]] = {}
    for day, (key_id, team_id, model), sums in groups:
        for kind, owner in (("key", key_id), ("team", team_id), ("model", model)):
            if owner:
                total = totals.get((day, kind, owner))
                if total is None:
                    totals[(day, kind, owner)] = list(sums)
                else:
                    for i, value in enumerate(sums):
                        total[i] += value
    return [(day, kind, owner, int(n), int(p), int(c), int(o), int(r), cost)
            for (day, kind, owner), (n, p, c, o, r, cost) in totals.items()]


def _record(row: Iterable[Any]) -> UsageRecord:
    (time_, request_id, key_id, team_id, model, deployment, endpoint, route, status, prompt,
     cached, completion, reasoning, cost, upstream_ms, total_ms, attempts, flags) = row
    return UsageRecord(time_, request_id, key_id or None, team_id or None, model or None,
                       deployment or None, endpoint or None, route, status, prompt, cached,
                       completion, reasoning, cost, upstream_ms, total_ms, bool(flags & 1),
                       attempts, _SOURCES[flags >> 2], bool(flags & 2))
