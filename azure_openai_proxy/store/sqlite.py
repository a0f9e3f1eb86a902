"""Opening the embedded SQLite database: where it is, and how it is opened.

`database: sqlite:///var/lib/azure-openai-proxy/gateway.db` in the config (or
`AZURE_OPENAI_PROXY_DATABASE`); unset, a file in the container's data volume when that
directory is writable, else in the user's data directory. WAL lets readers (the CLI, the
admin API) run beside the one writer, and `busy_timeout` turns a short lock into a wait
instead of an error.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from azure_openai_proxy.settings import Settings, sqlite_file
from azure_openai_proxy.store.replaced import (
    REPLACED_IN_USE,
    ReplacedInUse,
    file_identity,
    mark_beside,
    stale_beside,
)

__all__ = ["DATA_VOLUME", "LockWaits", "connect", "database_path", "default_database", "sqlite_path"]

DATA_VOLUME = Path("/var/lib/azure-openai-proxy")
_BUSY_TIMEOUT_MS = 5000


def default_database(*, operator: bool = False) -> str:
    """The data volume when this user may write it, else the user's own data directory:
    where the gateway makes its database. `operator` (the CLI's commands, `keys`, `teams`,
    `usage`, run beside a gateway that may be another user): the data volume's whenever
    that directory is there, reads and writes alike. The writes chose by the operator's
    own access, so an operator who may not write it had their keys made in their own
    home, where the gateway never looks, and listed from the volume (a write this user
    may not make there is refused, naming it)."""
    if DATA_VOLUME.is_dir() and (operator or os.access(DATA_VOLUME, os.W_OK)):
        return _url(DATA_VOLUME / "gateway.db")
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return _url(base / "azure-openai-proxy" / "gateway.db")


def _url(path: Path) -> str:
    """`sqlite:///` and the path without its leading slash (`sqlite:////var/...` was the
    path `//var/...`: what the CLI's messages then named)."""
    return f"sqlite:///{str(path).lstrip('/')}"


def sqlite_path(url: str) -> Path:
    """`sqlite:///abs/path.db` or `sqlite://relative/path.db` -> the file's path
    (`settings.sqlite_file` has the rules). Anything else is a ValueError."""
    return Path(sqlite_file(url))


def database_path(settings: Settings, *, operator: bool = False) -> Path:
    """The governance database's file: the configured one, else the default. One place,
    so the key directory, the ledger, the admin API and the CLI agree."""
    return sqlite_path(settings.database or default_database(operator=operator))


def connect(path: Path, *, create: bool = True, immutable: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode, its directory made if missing. Used from one thread at
    a time (the store's worker thread, or the CLI). `create=False` (a reader: the usage
    report): opened read-only, so a database that is not there is a
    sqlite3.OperationalError, not made (empty, it would stand in for one removed, which
    the ledger's writer waits for), and an empty file stays empty. A database without
    a -wal file (its writer stopped, or none ever opened it) is read as immutable: with
    no -wal file no writer has it open, and read-only SQLite would make the -shm and
    -wal files, or fail where it may not (a directory this user cannot write). Made,
    they would stay (only a writer's close removes them), this user's: the gateway's
    user could then not write its database. `immutable` (with `create=False`): read as
    immutable whatever -wal is beside it (the file as it is on disk: a -wal left by
    another database the file replaced is not applied to it). A -wal or -shm beside the
    file marked as another file's (store/replaced.py) is never applied: a writer is
    refused (ReplacedInUse), a reader reads the file immutable."""
    made = False
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        made = not path.exists()
        stale = stale_beside(path)
        if stale is not None:
            raise ReplacedInUse(f"{path}: {stale} is another database file's: "
                                f"{REPLACED_IN_USE}")
        target: str | Path = path
    else:
        # `file://` and an empty authority: the path as given ("//x" is a path, not a host);
        # its bytes quoted, not its str: a name not in UTF-8 (an undecodable byte is a
        # lone surrogate in the str) was a UnicodeEncodeError, a 500 from /admin/usage
        target = f"file://{quote(os.fsencode(path.absolute()))}?mode=ro"
        if immutable or not Path(f"{path}-wal").exists() or stale_beside(path):
            target += "&immutable=1"
    opened = file_identity(path)
    connection = _open(target, uri=not create)
    if create:  # (the writer's choices, kept in the file: a reader has nothing to set)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        mark_beside(path, opened)
    if made:
        _owned_as_its_directory(path)
    connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def _owned_as_its_directory(path: Path) -> None:
    """A database root makes in another user's directory (`sudo ... keys create` before
    the gateway's first start, its data volume's user's) is that user's: root's, the
    gateway could read its keys but write nothing (no usage, no admin change)."""
    if os.geteuid() == 0:
        owner = path.parent.stat()
        if owner.st_uid != 0:
            os.chown(path, owner.st_uid, owner.st_gid)


def _open(target: str | Path, *, uri: bool) -> sqlite3.Connection:
    return sqlite3.connect(target, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False, uri=uri)


class LockWaits:
    """When a writer's statements may wait for a lock held elsewhere again (the CLI's
    write, a backup, `sqlite3` left in a transaction): one that waited its busy timeout
    out in vain makes those of the next busy timeout wait a tenth of it. The ledger
    writer's steps come in runs (a batch's label ids and rows, the spool's replay, a
    stop's last pass), and each waited the whole timeout for the same lock (4-5 s at a
    SIGTERM with its 1 s); each failure spools (or stays in the journal), so nothing is
    lost by failing sooner, and the tenth still outlasts another worker's batch (a few
    ms: ordinary contention is waited for, not spooled). A busy error that came sooner
    than half the timeout was no wait. One per writer, shared by the connections it
    opens in turn (it closes its store at any failure)."""

    def __init__(self) -> None:
        self.until = 0.0  # monotonic; 0: statements wait the whole busy timeout
        self._hurried: sqlite3.Connection | None = None  # the one set to wait a tenth

    def execute(self, db: sqlite3.Connection, busy_ms: int, sql: str,
                params: Sequence[object] = ()) -> sqlite3.Cursor:
        """`db.execute(sql, params)` for a statement that takes the write lock; `busy_ms`:
        `db`'s busy timeout."""
        if self.until and time.monotonic() >= self.until:
            self.until = 0.0
        if (self._hurried is db) != bool(self.until):
            db.execute(f"PRAGMA busy_timeout={busy_ms if self._hurried is db else busy_ms // 10}")
            self._hurried = None if self._hurried is db else db
        started = time.monotonic()
        try:
            return db.execute(sql, params)
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)  # (none: raised by Python)
            if (code is not None and code & 0xFF == sqlite3.SQLITE_BUSY and busy_ms
                    and not self.until):
                now = time.monotonic()
                if now - started >= busy_ms / 2000:
                    self.until = now + busy_ms / 1000
            raise
