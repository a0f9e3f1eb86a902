"""The usage ledger's writes while another process holds the database's write lock
(the CLI's write, a backup, `sqlite3` left in a transaction): each write waited the
whole busy timeout for the same lock, one after another (a batch's label ids and rows,
the spool's replay, a stop's last pass: 4-5 s at a SIGTERM with the writer's 1 s). A
write now waits once per busy timeout (store/sqlite.py `LockWaits`): after one that
waited in vain, those of the next busy timeout fail at once (the writer spools them),
in the store that waited and in the next one the writer opens with the same waits; a
lock let go is taken at once meanwhile, and the waits come back after the timeout.

The lock is held by a real process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from azure_openai_proxy.store.ledger import LedgerStore
from azure_openai_proxy.store.sqlite import LockWaits

_LOCKER = """
import sqlite3, sys
held = sqlite3.connect(sys.argv[1], isolation_level=None)
held.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
"""
_BUSY_MS = 400


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    locker = subprocess.Popen([sys.executable, "-c", _LOCKER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        yield
    finally:
        locker.communicate("go\n", timeout=30)


def _labels(name: str) -> tuple[str, str, str, str, str, str]:
    return (name, "", "gpt-4o", "dep", "https://e", "chat/completions")


def _failing(write: Callable[[], object]) -> float:
    """How long `write` took to fail as busy."""
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        write()
    return time.monotonic() - started


def test_a_write_waits_for_a_held_lock_once_per_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    waits = LockWaits()
    store = LedgerStore.open(path, busy_timeout_ms=_BUSY_MS, waits=waits)
    try:
        with _locked(path):
            assert _failing(lambda: store.label_id(_labels("a"))) >= _BUSY_MS / 1000
            # main: each waited the whole busy timeout again
            assert _failing(lambda: store.label_id(_labels("b"))) < _BUSY_MS / 2000
            assert _failing(lambda: store.delete_before(2e9)) < _BUSY_MS / 2000
            again = LedgerStore.open(path, busy_timeout_ms=_BUSY_MS, waits=waits)
            try:  # the writer's next store, opened after the failure
                assert _failing(lambda: again.label_id(_labels("c"))) < _BUSY_MS / 2000
            finally:
                again.close()
        # The lock let go: taken at once, the waits still cut.
        assert store.label_id(_labels("d")) > 0
        time.sleep(_BUSY_MS / 1000)
        with _locked(path):  # the busy timeout over: the waits are back
            assert _failing(lambda: store.label_id(_labels("e"))) >= _BUSY_MS / 1000
    finally:
        store.close()
