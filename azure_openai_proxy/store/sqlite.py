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
from pathlib import Path

from azure_openai_proxy.settings import Settings

__all__ = ["DATA_VOLUME", "connect", "database_path", "default_database", "sqlite_path"]

DATA_VOLUME = Path("/var/lib/azure-openai-proxy")
_BUSY_TIMEOUT_MS = 5000


def default_database() -> str:
    if DATA_VOLUME.is_dir() and os.access(DATA_VOLUME, os.W_OK):
        return f"sqlite:///{DATA_VOLUME / 'gateway.db'}"
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'azure-openai-proxy' / 'gateway.db'}"


def sqlite_path(url: str) -> Path:
    """`sqlite:///abs/path.db` (three slashes and an absolute path) or
    `sqlite://relative/path.db` -> the file's path. Anything else is a ValueError."""
    if not url.startswith("sqlite://"):
        raise ValueError("only sqlite:// databases are supported (e.g. sqlite:///var/lib/azure-openai-proxy/gateway.db)")
    rest = url[len("sqlite://"):]
    if not rest or rest == "/":
        raise ValueError("a sqlite:// database needs a file path")
    # Taken as a file name, SQLAlchemy's `?mode=ro` or `?timeout=30` and `:memory:` made
    # a new, empty database beside the one meant (`gateway.db?mode=ro`, `/:memory:`):
    # the keys made with the plain path were not there.
    if "?" in rest or "#" in rest or Path(rest).name == ":memory:":
        raise ValueError("a sqlite:// database is a file path without `?` or `#` "
                         "(no options) and not :memory: (every worker and the CLI share "
                         "the file)")
    return Path(rest)


def database_path(settings: Settings) -> Path:
    """The governance database's file: the configured one, else the default. One place,
    so the key directory, the ledger, the admin API and the CLI agree."""
    return sqlite_path(settings.database or default_database())


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode, its directory made if missing. Used from one thread at
    a time (the store's worker thread, or the CLI)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                 check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection
