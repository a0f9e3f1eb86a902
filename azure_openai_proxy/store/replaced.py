"""A database file replaced under a long-lived connection (`mv backup.db gateway.db`, or
the file removed and put back), and the replaced one's -wal left beside the new one.

SQLite leaves the -wal of a file moved or removed while open (its last connection then
neither checkpoints nor deletes it: the file is not at its path any more). A connection
opened to the new file with that -wal beside it applies the old file's pages to it,
for good: the moved-in backup's keys read as the old ones, and the first checkpoint
writes them into it (found with the key directory, and with the usage ledger's own
connection: a backup moved in held the replaced file's usage rows after one write).

`FileWatch` is held by each long-lived connection's owner (the key directory, the
ledger writer): `opening` notes the file about to be opened, `opened` holds its -wal
open (a descriptor: while held, its inode cannot be reused by a new -wal, which ext4
gives the number just freed), `replaced` says the file at the path is not the one
opened, and `check`, before opening again, raises `ReplacedInUse` while the file at
the path is another one and the -wal beside it is the one held. Once that -wal is gone
(every process that had the replaced file stopped, its -wal and -shm removed), the
new file is opened as usual, whatever -wal a connection makes for it since.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = ["REPLACED_IN_USE", "FileWatch", "ReplacedInUse", "file_identity"]

REPLACED_IN_USE = ("the replaced file's -wal is beside it, which SQLite would apply to it: "
                   "changes and writes wait until it is gone (stop every process using "
                   "the database first; `sqlite3 DB \".restore BACKUP\"` is the way to "
                   "replace one in use)")


class ReplacedInUse(sqlite3.OperationalError):
    """The database file was replaced, and the replaced one's -wal is still beside it."""


def file_identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`; None when there is none (or it cannot
    be looked at)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class FileWatch:
    """The database file one connection opened at `path`, and that file's -wal, held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wal = path.with_name(path.name + "-wal")
        self.file: tuple[int, int] | None = None  # the file opened (or being opened)
        self._held: int | None = None  # a descriptor of its -wal

    def opening(self) -> None:
        """Before a connection is opened: the file at the path (a file swapped in
        between is then noticed by the next `replaced`)."""
        self.file = file_identity(self.path)

    def opened(self) -> None:
        """A connection was just opened (in WAL mode: its -wal is there): that -wal held."""
        self.release()
        if self.file is None:  # made by the opening
            self.file = file_identity(self.path)
        try:
            self._held = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._held = None

    def replaced(self) -> bool:
        """The file at the path is not the one opened: another one, or none."""
        return self.file is not None and file_identity(self.path) != self.file

    def check(self) -> None:
        """Before opening again: ReplacedInUse while another file is at the path and the
        -wal of the one opened before is beside it. (None at the path: nothing to say;
        the caller decides what a missing file means.)"""
        if self._held is None:
            return
        now = file_identity(self.path)
        if now is None:
            return
        if now != self.file:
            held = os.fstat(self._held)
            if file_identity(self._wal) == (held.st_dev, held.st_ino):
                raise ReplacedInUse(REPLACED_IN_USE)
        self.release()

    def release(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None
