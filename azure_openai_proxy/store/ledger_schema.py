"""The usage ledger's tables in SQLite, their version, and the migration from the first.

Version 2 (this one): a raw record is a narrow row of numbers and its request id. What
repeats from request to request (key, team, model, deployment, endpoint, route) is one
row of `usage_labels`, named by its integer id; stream, priced and the usage's source
share one integer (`flags`), and the UTC day is the record's time's (`date(time,
'unixepoch')`). The writer binds 13 parameters a record, one of them text, instead of
21 (ten text): about half the SQLite work, and a third of the binding the writer does
holding the GIL.

    usage_records   time, request_id (unique), label, status, prompt/cached/completion/
                    reasoning tokens, cost_usd, upstream_ms, total_ms, attempts, flags
    usage_labels    id -> key_id, team_id, model, deployment, endpoint, route ('' for
                    none: SQLite's UNIQUE treats NULLs as distinct); never deleted (a
                    few rows: one per combination ever seen)
    usage_rollups   (day, kind, id) -> requests, tokens, cost (unchanged since version 1)

Indexes on the raw table, each a B-tree insert per record, and who needs it:
`usage_records_request` (unique request_id): a spool replayed twice counts once (INSERT
OR IGNORE), and the budgets' refresh asks which spooled request ids are in
(`spend_and_recorded`); `usage_records_time`: usage queries by time range (the `usage`
command, GET /admin/usage), `records(since)` and retention (`delete_before`).

Version 1 (no row in `schema_versions`): the wide table, every field a column. A
database made by it is migrated when a `LedgerStore` first opens it, in one
transaction: its labels collected, its rows copied, the wide table dropped.
"""

from __future__ import annotations

import logging
import sqlite3

__all__ = ["LEDGER_VERSION", "LedgerBehind", "prepare", "require_current"]

log = logging.getLogger("azure_openai_proxy")

LEDGER_VERSION = 2
_TABLES = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage_labels (
    id INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL, team_id TEXT NOT NULL, model TEXT NOT NULL,
    deployment TEXT NOT NULL, endpoint TEXT NOT NULL, route TEXT NOT NULL,
    UNIQUE (key_id, team_id, model, deployment, endpoint, route)
);
CREATE TABLE IF NOT EXISTS usage_records (
    time REAL NOT NULL, request_id TEXT NOT NULL, label INTEGER NOT NULL,
    status INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL, upstream_ms REAL, total_ms REAL NOT NULL,
    attempts INTEGER NOT NULL, flags INTEGER NOT NULL
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
_FROM_VERSION_1 = """
ALTER TABLE usage_records RENAME TO usage_records_v1;
DROP INDEX IF EXISTS usage_records_request;
DROP INDEX IF EXISTS usage_records_time;
{tables}
INSERT OR IGNORE INTO usage_labels (key_id, team_id, model, deployment, endpoint, route)
SELECT DISTINCT coalesce(key_id, ''), coalesce(team_id, ''), coalesce(model, ''),
       coalesce(deployment, ''), coalesce(endpoint, ''), route FROM usage_records_v1;
INSERT OR IGNORE INTO usage_records
SELECT v.time, v.request_id, l.id, v.status, v.prompt_tokens, v.cached_tokens,
       v.completion_tokens, v.reasoning_tokens, v.cost_usd, v.upstream_ms, v.total_ms,
       v.attempts,
       (v.stream != 0) | ((v.priced != 0) << 1)
       | (CASE v.usage_source WHEN 'measured' THEN 1 WHEN 'estimated' THEN 2 ELSE 0 END << 2)
FROM usage_records_v1 AS v JOIN usage_labels AS l
  ON l.key_id = coalesce(v.key_id, '') AND l.team_id = coalesce(v.team_id, '')
 AND l.model = coalesce(v.model, '') AND l.deployment = coalesce(v.deployment, '')
 AND l.endpoint = coalesce(v.endpoint, '') AND l.route = v.route
ORDER BY v.rowid;
DROP TABLE usage_records_v1;
"""
_SET_VERSION = "INSERT OR REPLACE INTO schema_versions (component, version) VALUES ('ledger', ?)"


def prepare(db: sqlite3.Connection) -> None:
    """Make the ledger's tables current. A database already current is only read (a
    locked or read-only one opens as before); otherwise the tables are made, or a
    version 1 database migrated, under the write lock, in one transaction (a second
    process opening it at the same moment waits, then finds it done)."""
    if _version(db) == LEDGER_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)
        if version is None and _columns(db, "usage_records") >= {"key_id", "day"}:
            count = db.execute("SELECT count(*) FROM usage_records").fetchone()[0]
            log.warning("usage ledger: migrating %d records to the ledger's schema version "
                        "%d (once)", count, LEDGER_VERSION)
            _script(db, _FROM_VERSION_1.format(tables=_TABLES))
        elif version is None or version < LEDGER_VERSION:
            _script(db, _TABLES)
        elif version > LEDGER_VERSION:
            raise sqlite3.DatabaseError(
                f"the usage ledger's schema is version {version}, newer than this gateway's "
                f"({LEDGER_VERSION}): upgrade the gateway")
        db.execute(_SET_VERSION, (LEDGER_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class LedgerBehind(sqlite3.OperationalError):
    """The database holds a ledger of an older schema: a reader may have it migrated (the
    writer's `prepare`, as the gateway's start would) rather than refuse to report it."""


def require_current(db: sqlite3.Connection) -> None:
    """For a reader (a report), which makes and migrates nothing: a database without the
    ledger's tables (none yet: the ledger's writer makes them) is a
    sqlite3.OperationalError; one whose ledger is of an older schema a `LedgerBehind`."""
    version = _version(db)
    if version == LEDGER_VERSION:
        return
    if version is not None or "request_id" in _columns(db, "usage_records"):
        # (the first schema wrote no version row: its wide usage_records tells it)
        raise LedgerBehind(f"the usage ledger's schema is older than this gateway's "
                           f"({LEDGER_VERSION})")
    raise sqlite3.OperationalError(
        "the database holds no usage ledger yet (the gateway makes it when it starts)")


def _version(db: sqlite3.Connection) -> int | None:
    if "version" not in _columns(db, "schema_versions"):
        return None
    row = db.execute("SELECT version FROM schema_versions WHERE component = 'ledger'").fetchone()
    return None if row is None else int(row[0])


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def _script(db: sqlite3.Connection, script: str) -> None:
    """Run `script`'s statements inside the open transaction (executescript would
    commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
