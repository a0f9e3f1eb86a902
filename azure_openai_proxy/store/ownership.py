"""Which virtual key created which Azure object, in the governance database, so every
worker and every restart agree (gateway/ownership.py keeps the recent ones in memory).

One connection, used from one thread at a time (the caller's executor).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from azure_openai_proxy.store.sqlite import LockWaits, connect

__all__ = ["ClaimVerdict", "ClaimWithdrawn", "Counted", "OwnerRow", "OwnerStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS object_owners (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    models TEXT,           -- a batch input file's models, newline-separated; NULL: none
    created REAL NOT NULL,
    home_endpoint TEXT,    -- where Azure made it: the deployment that answered (NULL:
    home_deployment TEXT   -- not recorded, as for a streamed response's or before them)
) WITHOUT ROWID
"""
# Added to a table made before them by the first write (an older gateway's inserts,
# which name their columns, still work).
_HOME_COLUMNS = ("home_endpoint", "home_deployment")
# The tokens a Responses turn chained to a key's response or conversation reads again
# (gateway/chained.py), so a turn after a restart counts them instead of guessing. Kept
# as long as Azure keeps a stored response (30 days).
_CONTEXT_SCHEMA = """
CREATE TABLE IF NOT EXISTS chained_context (
    key_id TEXT NOT NULL,
    id TEXT NOT NULL,      -- a response's or a conversation's
    tokens INTEGER NOT NULL,
    noted REAL NOT NULL,
    PRIMARY KEY (key_id, id)
) WITHOUT ROWID
"""
CONTEXT_DAYS = 30
# What the reads of a background response (or an Assistants run) and its cut streams'
# estimates counted of its usage, by Azure's id (gateway/rereads.py): every worker, and
# the gateway after a restart, counts it once. Kept as long as the contexts are.
_COUNTED_SCHEMA = """
CREATE TABLE IF NOT EXISTS counted_usage (
    id TEXT PRIMARY KEY,
    whole INTEGER NOT NULL,      -- 1: Azure's usage of it was counted
    prompt INTEGER NOT NULL,     -- what the estimates of its cut streams counted
    completion INTEGER NOT NULL,
    through INTEGER NOT NULL,    -- the last text delta they counted (-1: none)
    noted REAL NOT NULL
) WITHOUT ROWID
"""
# Counted: (whole, prompt, completion, through)
Counted = tuple[bool, int, int, int]
_PURGE_EVERY = 3600.0
_AGAIN_WAIT_MS = 100  # `add_again`'s wait for a lock held elsewhere
_IN_CHUNK = 500  # ids per IN (...) query, under SQLite's parameter limit
_COLUMNS = "key_id, models, home_endpoint, home_deployment"
_COLUMNS_BEFORE_HOMES = "key_id, models, NULL, NULL"
# An object's owner, its batch file's models, and its home (endpoint, deployment).
OwnerRow = tuple[str, frozenset[str] | None, tuple[str, str] | None]


class ClaimWithdrawn(Exception):
    """`claim_counted`'s claim given up by its reader before it could commit: rolled back."""


class ClaimVerdict:
    """Whether a claim's transaction commits, settled once by whichever side comes first:
    the owners' thread about to commit it (`commit`), or the read that gave up waiting
    for it (`withdraw`). So a read knows, when it stops waiting, whether its claim can
    still be written: never (withdrawn), or already being committed (moments away)."""

    __slots__ = ("_lock", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held for a flag's test and set, by either side
        self._state: bool | None = None  # True: committing; False: withdrawn

    def commit(self) -> bool:
        """In the owners' thread, before the COMMIT: whether it may (not withdrawn)."""
        with self._lock:
            if self._state is None:
                self._state = True
            return self._state

    def withdrawn(self) -> bool:
        """Whether the read gave the claim up already (then it need not begin: no wait
        for a lock, up to the busy timeout, only to roll back)."""
        return self._state is False

    def withdraw(self) -> bool:
        """On the loop, the wait over: whether the claim is withdrawn (never committed);
        False when its commit has begun."""
        with self._lock:
            if self._state is None:
                self._state = False
            return not self._state


class OwnerStore:
    """`waits`: its writer's (`ObjectOwners`), shared by the stores it opens in turn, so
    that writes queued behind a lock held elsewhere do not each wait the busy timeout."""

    def __init__(self, connection: sqlite3.Connection, waits: LockWaits | None = None) -> None:
        self._db = connection
        self._busy_ms = int(connection.execute("PRAGMA busy_timeout").fetchone()[0])
        self._waits = LockWaits() if waits is None else waits
        self._write(_SCHEMA)  # (a write only when the table is not there yet)
        self._write(_CONTEXT_SCHEMA)
        self._counts_made = False  # `counted_usage`, made by the first write (not the open)
        self._purged = 0.0  # when the old chained contexts were last removed
        self._purged_counts = 0.0  # and the old counted usages
        # Whether the table has the home columns: an older gateway's gets them at the
        # first write, not here (opening only reads: a locked database opens as before).
        self._homes = self._has_homes()

    @classmethod
    def open(cls, path: Path, waits: LockWaits | None = None) -> OwnerStore:
        return cls(connect(path), waits)

    def close(self) -> None:
        self._db.close()

    def _has_homes(self) -> bool:
        columns = {str(row[1]) for row in self._db.execute("PRAGMA table_info(object_owners)")}
        return columns.issuperset(_HOME_COLUMNS)

    def _selected(self) -> str:
        """The columns an `OwnerRow` is read from: NULL homes while the table has none
        (until a write, this worker's or another's, adds them)."""
        if not self._homes:
            self._homes = self._has_homes()
        return _COLUMNS if self._homes else _COLUMNS_BEFORE_HOMES

    def _add_home_columns(self) -> None:
        """The home columns, on a table an older gateway made: under the write lock, in
        one transaction (another worker adding them at once waits, then finds them)."""
        self._write("BEGIN IMMEDIATE")
        try:
            if not self._has_homes():
                for column in _HOME_COLUMNS:
                    self._db.execute(f"ALTER TABLE object_owners ADD COLUMN {column} TEXT")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._homes = True

    def add(self, object_id: str, key_id: str, models: frozenset[str] | None,
            now: float, home: tuple[str, str] | None = None) -> None:
        """Record an object's owner (and `home`: the endpoint and deployment that made
        it); an object already recorded keeps its owner."""
        joined = None if models is None else "\n".join(sorted(models))
        endpoint, deployment = home or (None, None)
        if not self._homes:
            self._add_home_columns()  # a write, which needs the lock anyway
        self._write(
            "INSERT OR IGNORE INTO object_owners (id, key_id, models, created, home_endpoint, "
            "home_deployment) VALUES (?, ?, ?, ?, ?, ?)",
            (object_id, key_id, joined, now, endpoint, deployment))

    def add_again(self, rows: Iterable[tuple[str, str, frozenset[str] | None,
                                            tuple[str, str] | None, float]],
                  wait_ms: int = _AGAIN_WAIT_MS) -> None:
        """`add` for owners whose write failed before (id, key, models, home, made), in
        the background, in one transaction: it waits `wait_ms` at most for a lock held
        elsewhere, not the busy timeout (the owners' one thread is not held up by writes
        nobody awaits); all of them written, or none (an error)."""
        if not self._homes:
            self._add_home_columns()
        before = int(self._db.execute("PRAGMA busy_timeout").fetchone()[0])
        self._db.execute(f"PRAGMA busy_timeout={wait_ms}")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO object_owners (id, key_id, models, created, "
                    "home_endpoint, home_deployment) VALUES (?, ?, ?, ?, ?, ?)",
                    ((object_id, key_id, None if models is None else "\n".join(sorted(models)),
                      made, *(home or (None, None)))
                     for object_id, key_id, models, home, made in rows))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        finally:
            self._db.execute(f"PRAGMA busy_timeout={before}")  # as `LockWaits` left it

    def get(self, object_id: str) -> OwnerRow | None:
        row = self._db.execute(f"SELECT {self._selected()} FROM object_owners WHERE id = ?",
                               (object_id,)).fetchone()
        return None if row is None else _owner_row(row)

    def get_many(self, object_ids: Iterable[str]) -> dict[str, OwnerRow]:
        """The recorded owners (models, homes) of those of `object_ids` that are known."""
        ids = list(object_ids)
        found: dict[str, OwnerRow] = {}
        columns = self._selected()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id, {columns} FROM object_owners WHERE id IN ({marks})", chunk)
            for row in rows:
                found[str(row[0])] = _owner_row(row[1:])
        return found

    def owned_of(self, key_id: str, object_ids: Iterable[str]) -> set[str]:
        """Those of `object_ids` that `key_id` owns."""
        ids = list(object_ids)
        owned: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start:start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id FROM object_owners WHERE key_id = ? AND id IN ({marks})",
                (key_id, *chunk))
            owned.update(str(row[0]) for row in rows)
        return owned

    def note_contexts(self, key_id: str, entries: Iterable[tuple[str, int]],
                      now: float) -> None:
        """`key_id`'s responses' and conversations' context tokens (the latest wins);
        those noted more than `CONTEXT_DAYS` ago are removed, at most once an hour."""
        for name, tokens in entries:  # (autocommit: one transaction each, as executemany's)
            self._write("INSERT OR REPLACE INTO chained_context (key_id, id, tokens, noted) "
                        "VALUES (?, ?, ?, ?)", (key_id, name, tokens, now))
        if now - self._purged >= _PURGE_EVERY:
            self._purged = now
            self._write("DELETE FROM chained_context WHERE noted < ?",
                             (now - CONTEXT_DAYS * 86400.0,))

    def contexts(self, key_id: str, names: Iterable[str]) -> dict[str, int]:
        """The context tokens noted for those of `names` that `key_id` made."""
        found: dict[str, int] = {}
        for name in names:
            row = self._db.execute(
                "SELECT tokens FROM chained_context WHERE key_id = ? AND id = ?",
                (key_id, name)).fetchone()
            if row is not None and type(row[0]) is int:
                found[name] = row[0]
        return found


    def add_counted(self, object_id: str, counted: Counted, now: float) -> None:
        """What a read or a cut stream of `object_id` counted, added to what is noted
        (one that counted Azure's whole usage stays so; estimates add up; the latest
        delta counted is kept); those noted more than `CONTEXT_DAYS` ago are removed, at
        most once an hour."""
        whole, prompt, completion, through = counted
        if not self._counts_made:
            self._write(_COUNTED_SCHEMA)
            self._counts_made = True
        self._write(
            "INSERT INTO counted_usage (id, whole, prompt, completion, through, noted) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "whole = max(whole, excluded.whole), prompt = prompt + excluded.prompt, "
            "completion = completion + excluded.completion, "
            "through = max(through, excluded.through), noted = excluded.noted",
            (object_id, int(whole), prompt, completion, through, now))
        if now - self._purged_counts >= _PURGE_EVERY:
            self._purged_counts = now
            self._write("DELETE FROM counted_usage WHERE noted < ?",
                             (now - CONTEXT_DAYS * 86400.0,))

    def claim_counted(self, object_id: str, now: float,
                      verdict: ClaimVerdict | None = None) -> Counted | None:
        """Note Azure's whole usage of `object_id` as counted, and return what was noted
        of it before (None: nothing). One transaction under the write lock: of readers
        on any number of connections claiming it at once, exactly one is answered with
        a count that is not whole (or None), and it alone counts the usage. A `verdict`
        withdrawn before the COMMIT rolls it back (`ClaimWithdrawn`): no claim made."""
        if verdict is not None and verdict.withdrawn():
            raise ClaimWithdrawn(object_id)  # (its turn in the owners' thread came late)
        if not self._counts_made:
            self._write(_COUNTED_SCHEMA)
            self._counts_made = True
        self._write("BEGIN IMMEDIATE")
        try:
            before = self.counted(object_id)
            if before is None or not before[0]:
                self._db.execute(
                    "INSERT INTO counted_usage (id, whole, prompt, completion, through, noted)"
                    " VALUES (?, 1, 0, 0, -1, ?) ON CONFLICT (id) DO UPDATE SET whole = 1,"
                    " noted = excluded.noted", (object_id, now))
            if verdict is not None and not verdict.commit():
                raise ClaimWithdrawn(object_id)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return before

    def _write(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """A statement that takes the write lock (`LockWaits`)."""
        return self._waits.execute(self._db, self._busy_ms, sql, params)

    def counted(self, object_id: str) -> Counted | None:
        """What is noted of `object_id` (`add_counted`), or None (none yet, or no table:
        no gateway has written one)."""
        try:
            row = self._db.execute(
                "SELECT whole, prompt, completion, through FROM counted_usage WHERE id = ?",
                (object_id,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return None
        return None if row is None else (bool(row[0]), int(row[1]), int(row[2]), int(row[3]))


def _owner_row(row: tuple[object, ...]) -> OwnerRow:
    """A row of `_COLUMNS` as an `OwnerRow`."""
    key_id, models, endpoint, deployment = row
    named = None if models is None else frozenset(m for m in str(models).split("\n") if m)
    # A few deployments made them all: their names are shared, not one copy per row kept
    # in memory (gateway/ownership.py keeps up to 200,000).
    home = None if endpoint is None or deployment is None else (
        sys.intern(str(endpoint)), sys.intern(str(deployment)))
    return str(key_id), named, home
