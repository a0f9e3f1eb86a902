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

A process that starts afresh holds nothing of the file before: `FileWatch` cannot tell
it the -wal beside is another file's (the file moved in while every process was down,
or while one ran that stopped since, leaving it). So each connection `connect` opens
marks the -wal and -shm beside it as its file's (`mark_beside`: an extended attribute
naming the database file (`file_identity`) and the marked file's device and inode, on
the -wal's and -shm's inodes: a -wal made anew has none, one copied or moved with its database
names another inode of its own and is not taken for stale), and refuses to open a file
whose -wal, or -shm still held by a process, is marked as another file's
(`stale_beside`: ReplacedInUse; a reader opens it immutable, as it is on disk). A -shm
no process holds is rebuilt by SQLite's first connection: a leftover (its processes
killed, then the -wal removed) is opened, not refused until someone removes it.
Refused, not moved aside: a rename cannot check that the -wal at the path is still the
one looked at (another worker, the ledger's writer or the CLI may have just made a live
one there), and the stale one may still be in use by a process of the replaced file
(a held -shm is not seen where /proc/locks lists no such lock: a process in another
pid namespace, another container on the same volume, or device numbers not stat's,
btrfs subvolumes; SQLite's rule stands there). A -wal or -shm with no mark (made by
another tool, or a file system without user extended attributes) is applied as SQLite
does. A file is known by its device, inode number and birth time (`file_identity`:
statx's, where the file system keeps one): a database removed and made anew with the
removed one's number (ext4 hands a freed number out again) is another file, its -wal
not applied to it; where no birth time is kept (0), the number alone is compared and
such a file is not told apart.

A stale -wal that holds no frame (`_frameless`: zero bytes, or its header alone) is
opened, not refused: SQLite's recovery (`walIndexRecover`) reads the 32-byte header,
then frames of a 24-byte frame header and one page while each is whole and its salts
and running checksum match the header's; a file shorter than the header and one frame
of the smallest page (512 bytes) has none, so nothing of it is read into the new file,
and the first write starts the log anew (a new header, new salts: `walRestartLog`).
Unless the -shm beside is held by a process: that may be the replaced file's, which can
still write its pages into that -wal as frames a connection of the new file would then
read (refused, as a -wal with frames is).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

__all__ = ["REPLACED_IN_USE", "FileWatch", "ReplacedInUse", "file_identity", "mark_beside",
           "stale_beside"]

REPLACED_IN_USE = ("the replaced file's -wal is beside it, which SQLite would apply to it: "
                   "changes and writes wait until it is gone (stop every process using "
                   "the database first; `sqlite3 DB \".restore BACKUP\"` is the way to "
                   "replace one in use)")


_MARK = "user.azure-openai-proxy.database"  # the extended attribute (`mark_beside`)
_BESIDE = ("-wal", "-shm")
_NO_FRAME = 32 + 24 + 512  # a -wal shorter than its header and one frame holds none

Identity = tuple[int, int, int]  # device, inode number, birth time (ns; 0: not kept)

_AT_FDCWD = -100
_STATX_BTIME = 0x800
_STATX_SIZE = 256  # struct statx
_STATX_BTIME_AT = 80  # its stx_btime: tv_sec (s64), tv_nsec (u32)


class ReplacedInUse(sqlite3.OperationalError):
    """The database file was replaced, and the replaced one's -wal is still beside it."""


def file_identity(path: Path | str) -> Identity | None:
    """The (device, inode, birth time) of the file at `path`; None when there is none
    (or it cannot be looked at)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino, _birth_ns(os.fsencode(path))


@functools.cache
def _statx() -> Callable[..., int] | None:
    """libc's statx (glibc 2.28, musl 1.2.5); None where there is none, or no ctypes
    (a Python built without libffi: files are then known by their number)."""
    try:
        import ctypes  # (here: an ImportError must not stop the start)

        call = ctypes.CDLL(None, use_errno=True).statx
    except (ImportError, OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                     ctypes.c_char_p)
    call.restype = ctypes.c_int
    return call


def _birth_ns(path: bytes) -> int:
    """When the file at `path` was made (ns), by the path (no descriptor: see
    `mark_beside`); 0 where the file system or the C library does not say."""
    call = _statx()
    if call is None:
        return 0
    import ctypes  # (`_statx` found it)

    out = ctypes.create_string_buffer(_STATX_SIZE)
    if call(_AT_FDCWD, path, 0, _STATX_BTIME, out) != 0:
        return 0
    mask, = struct.unpack_from("I", out, 0)
    if not mask & _STATX_BTIME:
        return 0
    seconds, nanoseconds = struct.unpack_from("qI", out, _STATX_BTIME_AT)
    return seconds * 1_000_000_000 + nanoseconds or 1  # (0 means "not kept")


def _number(path: Path | str) -> tuple[int, int] | None:
    """The (device, inode) of the file at `path`: enough to tell files apart while one
    of them is held open (its number is not given to another), or for a marked -wal or
    -shm (a mark is the inode's own: a file given a freed number has none)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _is(marked: tuple[int, ...], path: Path, number: tuple[int, int]) -> bool:
    """Whether the file at `path` (its `number`) is the one `marked` names: device and
    inode number, and the birth time when both have one (a mark of session 29: none);
    the birth time read only when the numbers match."""
    if marked[:2] != number:
        return False
    if len(marked) < 3 or not marked[2]:
        return True
    born = _birth_ns(os.fsencode(path))
    return not born or born == marked[2]


class FileWatch:
    """The database file one connection opened at `path`, and that file's -wal, held."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wal = path.with_name(path.name + "-wal")
        self.file: Identity | None = None  # the file opened (or being opened)
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
        # (`connect` marked what was there; a new database's -wal is made by its first
        # write, after it)
        mark_beside(self.path, self.file)
        try:
            self._held = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._held = None

    def replaced(self) -> bool:
        """The file at the path is not the one opened: another one, or none."""
        # (Asked while the connection is open: it holds the file, whose number is
        # then not given to another: the number says it.)
        return self.file is not None and _number(self.path) != self.file[:2]

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
            held = os.fstat(self._held)  # (held: its number is not given to another)
            wal = file_identity(self._wal)
            if wal is not None and wal[:2] == (held.st_dev, held.st_ino):
                raise ReplacedInUse(REPLACED_IN_USE)
        self.release()

    def release(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None


def mark_beside(path: Path, opened: Identity | None) -> None:
    """After a connection to `path` was opened: its -wal and -shm marked as the file
    `opened` (its identity taken before the opening; another file at the path now, or
    none: nothing is marked). Best effort: a file system without user extended
    attributes, or a -wal this user may not write, keeps no mark."""
    if opened is None or _number(path) != opened[:2]:  # (the connection holds it)
        return
    for suffix in _BESIDE:
        side = f"{path}{suffix}"
        found = _number(side)
        if found is None:
            continue
        mark = ":".join(map(str, (*opened, *found))).encode()
        # By the path, never a descriptor: closing one of the -shm would drop every
        # SQLite lock this process holds on it (POSIX locks are the process's). A file
        # swapped in between gets a mark naming another inode than its own: ignored.
        if _read_mark(side) != mark:  # (marked once: not a write per opening)
            with contextlib.suppress(OSError):
                os.setxattr(side, _MARK, mark)


def stale_beside(path: Path) -> str | None:
    """The name of the -wal or -shm beside `path` marked as another database file's
    (`mark_beside`), which SQLite would apply to this one; None when neither is."""
    here = _number(path)
    if here is None:
        return None
    for suffix in _BESIDE:
        side = f"{path}{suffix}"
        found = _number(side)  # (by the path: see `mark_beside`)
        mark = _read_mark(side) if found is not None else None
        fields = mark.split(b":") if mark else []
        if len(fields) not in (4, 5) or not all(field.isdigit() for field in fields):
            continue
        of, itself = tuple(map(int, fields[:-2])), tuple(map(int, fields[-2:]))
        # Its own identity another: copied or moved with its database (`cp -a`), not
        # left; or another file swapped in since the look (not the one marked).
        if (found is None or itself != found or _is(of, path, here)
                or (suffix == "-shm" and not _locked(found))):
            continue
        if suffix == "-wal" and _frameless(side) and not _held(f"{path}-shm"):
            continue  # nothing in it to apply (see the module's docstring)
        return path.name + suffix
    return None


def _frameless(wal: str) -> bool:
    """Whether the -wal at `wal` is too short to hold one frame."""
    try:
        return os.stat(wal).st_size < _NO_FRAME
    except OSError:
        return True


def _held(shm: str) -> bool:
    """Whether a process holds the -shm at `shm` (none there: no)."""
    found = _number(shm)
    return found is not None and _locked(found)


def _locked(found: tuple[int, int]) -> bool:
    """Whether a process holds a lock on the file `found` (a -shm: SQLite's
    connections hold one on it while open), from /proc/locks: a -shm nobody holds is
    rebuilt by the first connection (SQLite's own rule), a leftover (its processes
    killed, or stopped after their file was replaced), not a -wal's index in use; one
    held is shared by a new connection, so refused. By the listing, not by a lock
    asked for: that needs a descriptor of the -shm (see `mark_beside`). True when it
    cannot be read (no /proc: refused, as a held one)."""
    wanted = f"{os.major(found[0]):02x}:{os.minor(found[0]):02x}:{found[1]}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as listing:
            return any(wanted in line.split() for line in listing)
    except OSError:
        return True


def _read_mark(side: str) -> bytes | None:
    try:
        return os.getxattr(side, _MARK)
    except OSError:
        return None
