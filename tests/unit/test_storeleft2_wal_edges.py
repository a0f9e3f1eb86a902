"""Two edges of the -wal marks (store/replaced.py), with real files and a real process
of the replaced file:

- A stale -wal that holds no frame (zero bytes: its process opened the file and wrote
  nothing; or its header alone, a write torn after it) was refused like one with pages
  (ReplacedInUse until someone removed it: admin writes 503, the ledger spooling),
  though SQLite reads nothing from it. It is now opened, unless the -shm beside is held
  by a process (the replaced file's may still write frames into it): still refused.
- A database removed and made anew with the removed one's inode number (ext4 gives a
  freed number out again) was taken for the removed one: the removed file's -wal,
  marked with that number, was applied to the new file. A file is now known by its
  device, inode and birth time (statx), where the file system keeps one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.replaced import ReplacedInUse
from tests.unit.test_revstoreleft_replaced_wal import NOW, _names_on_disk, _with_backup

# A process of the file at argv[1]: it opens it (marking the -wal and -shm as that
# file's), reads, writes only when asked (argv[2] == "write": a key into its -wal),
# and closes when its stdin says so.
_HOLDER = """
import sys
from pathlib import Path
from azure_openai_proxy.store.keys import KeyStore
store = KeyStore.open(Path(sys.argv[1]))
store.list_keys()
if sys.argv[2] == "write":
    store.create_key("late", now=1.0)
print("open", flush=True)
sys.stdin.readline()
store.close()
"""


@contextmanager
def _held(path: Path, write: bool) -> Iterator[None]:
    """A process holding `path` open (its -wal with frames when `write`) for the body;
    it closes its connection after it (the file at the path replaced by then: SQLite
    leaves the -wal and -shm)."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path),
                               "write" if write else "read"], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        yield
    finally:
        if holder.stdin is not None:
            holder.stdin.write("go\n")
            holder.stdin.close()
        assert holder.wait(timeout=30) == 0


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _opens_with(path: Path) -> set[str]:
    store = KeyStore.open(path)
    try:
        store.create_key("after", now=NOW)
        return {key.name for key in store.list_keys()}
    finally:
        store.close()


@pytest.mark.parametrize("left", ["zero bytes", "a header alone"])
def test_a_stale_wal_without_frames_is_opened(tmp_path: Path, left: str) -> None:
    path, backup, _, _ = _with_backup(tmp_path)
    with _held(path, write=left == "a header alone"):
        os.replace(backup, path)
    wal = _wal(path)
    if left == "a header alone":
        assert wal.stat().st_size > 32  # the holder's key, in frames
        os.truncate(wal, 32)  # what a write torn after the header leaves
    assert wal.stat().st_size == (0 if left == "zero bytes" else 32)
    assert _opens_with(path) == {"kept", "after"}  # main: ReplacedInUse


def test_a_stale_wal_without_frames_is_refused_while_its_process_holds_the_shm(
        tmp_path: Path) -> None:
    path, backup, _, _ = _with_backup(tmp_path)
    with _held(path, write=False):
        os.replace(backup, path)
        assert _wal(path).stat().st_size == 0
        # Its process may still write frames (the old file's pages) into that -wal.
        with pytest.raises(ReplacedInUse):
            KeyStore.open(path)
    assert _names_on_disk(path) == {"kept"}


def _made_with_inode(directory: Path, inode: int, tries: int = 3000) -> Path | None:
    """A new file in `directory` given the number `inode` (ext4 hands a freed number out
    again); None if none was within `tries` files."""
    made = []
    try:
        for number in range(tries):
            candidate = directory / f"candidate-{number}"
            candidate.touch()
            if candidate.stat().st_ino == inode:
                return candidate
            made.append(candidate)
        return None
    finally:
        for other in made:
            other.unlink()


def _made_anew_with_its_inode(directory: Path) -> tuple[Path, int] | None:
    """The database (with the backup's keys) made anew at its path with the number of
    the removed one, whose -wal (holding the key `late`) is beside it; None when the
    file system gave that number to another file meanwhile."""
    directory.mkdir()
    path, backup, _, _ = _with_backup(directory)
    removed = path.stat().st_ino
    with _held(path, write=True):
        path.unlink()  # `rm gateway.db` while a process has it (its -wal: `late`)
    assert _wal(path).stat().st_size > 32  # left: the removed file's frames
    made = _made_with_inode(directory, removed)
    if made is None:
        return None
    shutil.copyfile(backup, made)  # the backup's bytes, in the file with that number
    os.replace(made, path)
    return path, removed


def test_a_database_made_anew_with_the_removed_ones_inode_is_not_read_through_its_wal(
        tmp_path: Path) -> None:
    # (the machine's other files may take the number first: up to three tries)
    for attempt in range(3):
        made = _made_anew_with_its_inode(tmp_path / f"try-{attempt}")
        if made is not None:
            break
    else:
        pytest.skip("the file system gave the removed file's inode number to no new file")
    path, removed = made
    assert path.stat().st_ino == removed
    with pytest.raises(ReplacedInUse):
        KeyStore.open(path)  # main: opened, the removed file's pages applied (`late`)
    assert _names_on_disk(path) == {"kept"}
