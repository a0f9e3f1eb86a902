"""The keys and teams tables of the SQLite store, the change counter and the change log.

Every write bumps one counter (`governance_version`) in the same transaction, so a
process that holds the keys in memory (`gateway/keydirectory.py`) notices any change,
made by itself, another worker, or the CLI, with one cheap query. What changed is in
the change log (`key_changes`: one row per key or team inserted, updated or deleted,
written by triggers, so a writer that does not know the log, an older CLI or a hand
edit, is logged too): the directory reads only the rows changed since the log position
it has (`changes_since`), and the whole tables only at start, or when the log no longer
reaches back that far (it keeps the last `_LOG_KEPT` changes). The log is pruned by each
write, at each opening, and by a reader that finds it long (`prune_log`: the changes
of writers that do not prune, older builds and hand edits). A pruning deletes the oldest
changes only: a reader whose position was deleted finds no mark there, and reads the
whole tables. Synchronous: the gateway calls it from its one database thread, the CLI
directly.

Revoking a key deletes its row: its secret stops working at once and for good (usage
records keep the key's id). Blocking (`blocked: true`) is the reversible way.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from azure_openai_proxy.governance.keys import display_prefix, new_secret, secret_hash
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey
from azure_openai_proxy.store.sqlite import connect

__all__ = ["KeyChanges", "KeyStore", "StoreConflict", "StoreNotFound"]

# 1: keys, teams and the change counter. 2: the change log (`key_changes` and its
# triggers; a database of version 1 gains them when it is next opened for writing).
_SCHEMA_VERSION = 2
_LOG_KEPT = 10_000  # changes the log keeps: a directory further behind reads everything
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS governance_version (
    id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT OR IGNORE INTO governance_version (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS teams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL,
    blocked INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    team_id TEXT REFERENCES teams (id),
    models TEXT NOT NULL,
    limits TEXT NOT NULL,
    expires_at REAL,
    blocked INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    previous_secret_hash TEXT,
    previous_valid_until REAL);
"""
# The log's triggers: not for `reader`'s temporary tables (it writes nothing). Each
# change's `mark` is random: a reader that remembers the mark at its position knows the
# log it reads on from is the one it read (not another database, or a backup, restored
# over it: their positions number other changes).
_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS key_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, id TEXT NOT NULL,
    mark INTEGER NOT NULL DEFAULT (random()));
-- An empty log has no mark to read on from: its first row (a log made now, on a
-- database that may already hold keys: version 1's) gives it one.
INSERT INTO key_changes (kind, id) SELECT 'log', '' WHERE NOT EXISTS (SELECT 1 FROM key_changes);
""" + "".join(f"""
CREATE TRIGGER IF NOT EXISTS {table}_inserted AFTER INSERT ON {table} BEGIN
    INSERT INTO key_changes (kind, id) VALUES ('{kind}', NEW.id); END;
CREATE TRIGGER IF NOT EXISTS {table}_updated AFTER UPDATE ON {table} BEGIN
    INSERT INTO key_changes (kind, id) VALUES ('{kind}', NEW.id);
    INSERT INTO key_changes (kind, id) SELECT '{kind}', OLD.id WHERE OLD.id != NEW.id; END;
CREATE TRIGGER IF NOT EXISTS {table}_deleted AFTER DELETE ON {table} BEGIN
    INSERT INTO key_changes (kind, id) VALUES ('{kind}', OLD.id); END;
""" for table, kind in (("keys", "key"), ("teams", "team")))
_SET_VERSION = """
INSERT INTO schema_versions (component, version) VALUES ('keys', ?)
ON CONFLICT (component) DO UPDATE SET version = max(version, excluded.version)"""
_KEY_COLUMNS = ("id, name, secret_hash, prefix, team_id, models, limits, expires_at, blocked, "
                "metadata, created_at, previous_secret_hash, previous_valid_until")
_TEAM_COLUMNS = "id, name, limits, blocked, metadata, created_at"
_NO_LIMITS = Limits()


class StoreNotFound(LookupError):
    """No key or team with that id (or name)."""


class StoreConflict(ValueError):
    """The write would break a rule of the store (a team name taken, a team with keys)."""


@dataclasses.dataclass(frozen=True, slots=True)
class KeyChanges:
    """What a read of the store found: every key and team (`whole`), or those changed
    since a log position (`KeyStore.changes_since`) and the ids of those deleted since.
    `position` is the log's position as of this read, `mark` the change's there (for
    the next `changes_since`), `version` the change counter."""

    version: int
    position: int
    keys: list[VirtualKey]
    teams: list[Team]
    whole: bool
    mark: int | None = None
    gone_keys: frozenset[str] = frozenset()
    gone_teams: frozenset[str] = frozenset()


class KeyStore:
    """Keys and teams in one SQLite database. One connection, used by one thread at a
    time."""

    def __init__(self, connection: sqlite3.Connection, *, prepare: bool = True,
                 log_kept: int = _LOG_KEPT) -> None:
        """`prepare`: make the tables the store needs, if missing (not for `reader`).
        `log_kept`: how many changes the log keeps (each write prunes the older)."""
        self._db = connection
        self._log_kept = log_kept
        if prepare:
            self._db.executescript(_SCHEMA)
            # In one transaction: a writer beside never sees a part of the triggers. A
            # log without marks (made by a build before them) is only dropped: its
            # readers' marks then match nothing, and they read everything once.
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(key_changes)")}
            drop = "DROP TABLE key_changes;" if columns and "mark" not in columns else ""
            prune = _PRUNE.replace("?", str(int(log_kept)))
            self._db.executescript(f"BEGIN IMMEDIATE; {drop}{_LOG_SCHEMA}{prune}; COMMIT;")
            self._db.execute(_SET_VERSION, (_SCHEMA_VERSION,))

    @classmethod
    def open(cls, path: Path) -> KeyStore:
        return cls(connect(path))

    @classmethod
    def reader(cls, path: Path) -> KeyStore:
        """The store opened read-only, for `keys list` and `show`: nothing is made or
        written, so an operator who may only read the database (the gateway's data
        volume) can list it. A database without the tables yet reads as empty: its
        tables are made in the connection's temporary schema (memory), not the file.
        A write is a sqlite3.Error."""
        connection = connect(path, create=False)
        try:
            made = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keys'").fetchone()
            if not made:
                connection.executescript(_SCHEMA.replace("CREATE TABLE", "CREATE TEMP TABLE"))
        except BaseException:
            connection.close()
            raise
        return cls(connection, prepare=False)

    def close(self) -> None:
        self._db.close()

    # -- reading ----------------------------------------------------------------------

    def version(self) -> int:
        """The change counter: different from the last reading when anything changed."""
        row = self._db.execute("SELECT version FROM governance_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def state(self, position: int) -> tuple[int, int | None]:
        """The change counter and the mark of the log's change at `position` (None: not
        in the log), read in one transaction: a poll's question. A mark not the one read
        there says the database is another one, whatever its counter."""
        with self._transaction("BEGIN"):
            return self.version(), self._mark(position)

    def snapshot(self) -> tuple[int, list[VirtualKey], list[Team]]:
        """(version, every key, every team), read in one transaction."""
        whole = self.everything()
        return whole.version, whole.keys, whole.teams

    def everything(self) -> KeyChanges:
        """Every key and team, and the log's position, read in one transaction."""
        with self._transaction("BEGIN"):
            keys = [_key(row) for row in self._db.execute(f"SELECT {_KEY_COLUMNS} FROM keys")]
            teams = [_team(row) for row in self._db.execute(f"SELECT {_TEAM_COLUMNS} FROM teams")]
            position = self._position()
            return KeyChanges(self.version(), position, keys, teams, whole=True,
                              mark=self._mark(position))

    def changes_since(self, position: int, mark: int | None) -> KeyChanges | None:
        """The keys and teams changed since the log's `position` (as they are now), and
        those deleted since; None when the log's change at `position` is gone (pruned)
        or is not the one read there (its `mark`: the database is another one, or a
        backup, restored over the one read, whatever its position), or there was none
        (an empty log): then only `everything` says what is there."""
        with self._transaction("BEGIN"):
            if mark is None or self._mark(position) != mark:
                return None
            now = self._position()
            keys = [_key(row) for row in self._db.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE id IN {_CHANGED}", ("key", position))]
            teams = [_team(row) for row in self._db.execute(
                f"SELECT {_TEAM_COLUMNS} FROM teams WHERE id IN {_CHANGED}", ("team", position))]
            gone_keys = self._gone("key", position, {key.id for key in keys})
            gone_teams = self._gone("team", position, {team.id for team in teams})
            return KeyChanges(self.version(), now, keys, teams, whole=False,
                              mark=self._mark(now), gone_keys=gone_keys,
                              gone_teams=gone_teams)

    def _mark(self, position: int) -> int | None:
        """The random mark of the log's change at `position` (None: not in the log)."""
        row = self._db.execute("SELECT mark FROM key_changes WHERE seq = ?",
                               (position,)).fetchone()
        return int(row[0]) if row else None

    def _position(self) -> int:
        """The last change's number in the log (0: none yet)."""
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'key_changes'").fetchone()
        return int(row[0]) if row else 0

    def _gone(self, kind: str, position: int, present: set[str]) -> frozenset[str]:
        changed = self._db.execute(f"SELECT id FROM key_changes WHERE {_SINCE}", (kind, position))
        return frozenset(row[0] for row in changed if row[0] not in present)

    def list_keys(self) -> list[VirtualKey]:
        rows = self._db.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at, id")
        return [_key(row) for row in rows]

    def list_teams(self) -> list[Team]:
        rows = self._db.execute(f"SELECT {_TEAM_COLUMNS} FROM teams ORDER BY created_at, id")
        return [_team(row) for row in rows]

    def key(self, ref: str) -> VirtualKey:
        """The key with id `ref`, else the one named `ref` (if exactly one is)."""
        row = self._db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (ref,)).fetchone()
        if row is None:
            rows = self._db.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE name = ?", (ref,)).fetchall()
            if len(rows) > 1:
                raise StoreConflict(f"{len(rows)} keys are named {ref!r}: give the key's id")
            row = rows[0] if rows else None
        if row is None:
            raise StoreNotFound(f"no key {ref!r}")
        return _key(row)

    def team(self, ref: str) -> Team:
        row = self._db.execute(
            f"SELECT {_TEAM_COLUMNS} FROM teams WHERE id = ? OR name = ? ORDER BY id = ? DESC",
            (ref, ref, ref),
        ).fetchone()
        if row is None:
            raise StoreNotFound(f"no team {ref!r}")
        return _team(row)

    # -- keys -------------------------------------------------------------------------

    def create_key(
        self, name: str, *, team: str | None = None, models: tuple[str, ...] = (),
        limits: Limits = _NO_LIMITS, expires_at: float | None = None,
        metadata: Mapping[str, Any] | None = None, blocked: bool = False, now: float,
    ) -> tuple[VirtualKey, str]:
        """A new key and its secret (shown once: only its hash is kept)."""
        secret = new_secret()
        with self._write():
            team_id = self.team(team).id if team is not None else None
            key = VirtualKey(
                id="key_" + secrets.token_hex(8), name=name, secret_hash=secret_hash(secret),
                prefix=display_prefix(secret), team_id=team_id, models=models, limits=limits,
                expires_at=expires_at, blocked=blocked, metadata=dict(metadata or {}),
                created_at=now,
            )
            self._db.execute(f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES ({_marks(13)})",
                             _key_row(key))
        return key, secret

    def update_key(self, ref: str, changes: Mapping[str, Any]) -> VirtualKey:
        """Change a key's name, team (a team's id or name, or None), models, limits,
        expires_at, blocked or metadata."""
        with self._write():
            key = self.key(ref)
            changes = dict(changes)
            if "team_id" in changes and changes["team_id"] is not None:
                changes["team_id"] = self.team(changes["team_id"]).id
            if isinstance(changes.get("limits"), Mapping):  # only the limits named change
                changes["limits"] = dataclasses.replace(key.limits, **changes["limits"])
            key = dataclasses.replace(key, **changes)
            self._db.execute(f"UPDATE keys SET ({_KEY_COLUMNS}) = ({_marks(13)}) WHERE id = ?",
                             (*_key_row(key), key.id))
        return key

    def rotate_key(self, ref: str, *, grace_seconds: float, now: float) -> tuple[VirtualKey, str]:
        """A new secret for the key; the current one keeps working for `grace_seconds`
        (0: it stops at once). A secret from before an earlier rotation stops now."""
        secret = new_secret()
        with self._write():
            key = self.key(ref)
            key = dataclasses.replace(
                key, secret_hash=secret_hash(secret), prefix=display_prefix(secret),
                previous_secret_hash=key.secret_hash if grace_seconds > 0 else None,
                previous_valid_until=now + grace_seconds if grace_seconds > 0 else None,
            )
            self._db.execute(f"UPDATE keys SET ({_KEY_COLUMNS}) = ({_marks(13)}) WHERE id = ?",
                             (*_key_row(key), key.id))
        return key, secret

    def delete_key(self, ref: str) -> VirtualKey:
        """Revoke a key for good: its row is deleted."""
        with self._write():
            key = self.key(ref)
            self._db.execute("DELETE FROM keys WHERE id = ?", (key.id,))
        return key

    # -- teams ------------------------------------------------------------------------

    def create_team(self, name: str, *, limits: Limits = _NO_LIMITS,
                    metadata: Mapping[str, Any] | None = None, now: float) -> Team:
        team = Team(id="team_" + secrets.token_hex(8), name=name, limits=limits,
                    metadata=dict(metadata or {}), created_at=now)
        with self._write():
            if self._db.execute("SELECT 1 FROM teams WHERE name = ?", (name,)).fetchone():
                raise StoreConflict(f"a team named {name!r} exists")
            self._db.execute(f"INSERT INTO teams ({_TEAM_COLUMNS}) VALUES ({_marks(6)})",
                             _team_row(team))
        return team

    def update_team(self, ref: str, changes: Mapping[str, Any]) -> Team:
        with self._write():
            team = self.team(ref)
            changes = dict(changes)
            if isinstance(changes.get("limits"), Mapping):
                changes["limits"] = dataclasses.replace(team.limits, **changes["limits"])
            team = dataclasses.replace(team, **changes)
            clash = self._db.execute("SELECT 1 FROM teams WHERE name = ? AND id != ?",
                                     (team.name, team.id)).fetchone()
            if clash:
                raise StoreConflict(f"a team named {team.name!r} exists")
            self._db.execute(f"UPDATE teams SET ({_TEAM_COLUMNS}) = ({_marks(6)}) WHERE id = ?",
                             (*_team_row(team), team.id))
        return team

    def delete_team(self, ref: str) -> Team:
        """Delete a team that has no keys (move or revoke them first)."""
        with self._write():
            team = self.team(ref)
            count = self._db.execute("SELECT count(*) FROM keys WHERE team_id = ?",
                                     (team.id,)).fetchone()[0]
            if count:
                raise StoreConflict(f"team {team.name!r} still has {count} key(s)")
            self._db.execute("DELETE FROM teams WHERE id = ?", (team.id,))
        return team

    def prune_log(self) -> int:
        """Delete the log's oldest changes beyond the `log_kept` newest, when it holds a
        tenth more (a write prunes its own: these are the changes of writers that do not,
        an older build or a hand edit, which a gateway that writes nothing never pruned).
        The number deleted."""
        oldest = self._db.execute("SELECT min(seq) FROM key_changes").fetchone()[0]
        if oldest is None or self._position() - oldest + 1 <= self._log_kept * 11 // 10:
            return 0
        with self._transaction("BEGIN IMMEDIATE"):
            return self._db.execute(_PRUNE, (self._log_kept,)).rowcount

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[None]:
        self._db.execute(begin)
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction that bumps the change counter."""
        with self._transaction("BEGIN IMMEDIATE"):
            yield
            self._db.execute("UPDATE governance_version SET version = version + 1 WHERE id = 1")
            self._db.execute(_PRUNE, (self._log_kept,))


# The oldest changes, all but the newest `?`: only ever the log's start, so a reader whose
# position is still there has every change after it.
_PRUNE = """DELETE FROM key_changes WHERE seq <= (
    SELECT seq FROM sqlite_sequence WHERE name = 'key_changes') - ?"""
_SINCE = "kind = ? AND seq > ?"
_CHANGED = f"(SELECT id FROM key_changes WHERE {_SINCE})"


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _limits_json(limits: Limits) -> str:
    return orjson.dumps(dataclasses.asdict(limits)).decode()


@functools.lru_cache(maxsize=256)
def _limits(text: str) -> Limits:
    """Limits are frozen, and most keys have the same few: each text is parsed once (a
    snapshot of 3,000 keys, after every admin write, spent most of its time here)."""
    data = orjson.loads(text)
    return Limits(**{k: v for k, v in data.items() if k in _LIMIT_FIELDS})


_LIMIT_FIELDS = frozenset(f.name for f in dataclasses.fields(Limits))


def _key_row(key: VirtualKey) -> tuple[Any, ...]:
    return (key.id, key.name, key.secret_hash, key.prefix, key.team_id,
            orjson.dumps(list(key.models)).decode(), _limits_json(key.limits), key.expires_at,
            int(key.blocked), orjson.dumps(key.metadata).decode(), key.created_at,
            key.previous_secret_hash, key.previous_valid_until)


def _key(row: tuple[Any, ...]) -> VirtualKey:
    return VirtualKey(
        id=row[0], name=row[1], secret_hash=row[2], prefix=row[3], team_id=row[4],
        models=tuple(orjson.loads(row[5])), limits=_limits(row[6]), expires_at=row[7],
        blocked=bool(row[8]), metadata=orjson.loads(row[9]), created_at=row[10],
        previous_secret_hash=row[11], previous_valid_until=row[12],
    )


def _team_row(team: Team) -> tuple[Any, ...]:
    return (team.id, team.name, _limits_json(team.limits), int(team.blocked),
            orjson.dumps(team.metadata).decode(), team.created_at)


def _team(row: tuple[Any, ...]) -> Team:
    return Team(id=row[0], name=row[1], limits=_limits(row[2]), blocked=bool(row[3]),
                metadata=orjson.loads(row[4]), created_at=row[5])
