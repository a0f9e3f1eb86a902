"""A write to the key store by a writer that knows nothing of its change log (an older
CLI, a hand edit with `sqlite3`): the statement and the change counter's bump, in one
transaction, nothing else. The log's triggers are what record it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def hand_write(database: Path, statement: str, *parameters: Any) -> None:
    with sqlite3.connect(database, isolation_level=None) as raw:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(statement, parameters)
        raw.execute("UPDATE governance_version SET version = version + 1")
        raw.execute("COMMIT")
    raw.close()
