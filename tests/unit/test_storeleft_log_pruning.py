"""The key change log is pruned by each write of this build; a writer that does not
prune (an older build's CLI, a hand edit with `sqlite3`: the log's triggers record its
changes all the same) made it grow for good when the gateway itself wrote nothing. Now
a gateway that reads a log grown past a tenth over what it keeps prunes it (oldest
changes first), and so does every opening of the store; a reader whose position was
pruned away (another worker, not yet polled) still reads every change it missed: it
finds no mark at its position, and reads the directory whole."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.store.keys import KeyStore

NOW = 1_000_000.0
KEPT = 10_000  # the store's `_LOG_KEPT`
WRITES = 12_000  # past KEPT and its tenth


def _older_build_writes(path: Path, key_id: str, revoked_id: str) -> None:
    """What a writer that knows nothing of the log writes: `WRITES` renames of one key
    (one logged change each), a revocation amid them, a block last; no pruning."""
    with sqlite3.connect(path, isolation_level=None) as raw:
        raw.execute("BEGIN IMMEDIATE")
        for i in range(WRITES):
            raw.execute("UPDATE keys SET name = ? WHERE id = ?", (f"renamed-{i}", key_id))
            if i == WRITES // 2:
                raw.execute("DELETE FROM keys WHERE id = ?", (revoked_id,))
        raw.execute("UPDATE keys SET blocked = 1 WHERE id = ?", (key_id,))
        raw.execute("UPDATE governance_version SET version = version + 1")
        raw.execute("COMMIT")
    raw.close()


def _log_size(path: Path) -> int:
    with sqlite3.connect(path) as raw:
        size = int(raw.execute("SELECT count(*) FROM key_changes").fetchone()[0])
    raw.close()
    return size


def test_a_reading_gateway_prunes_an_older_builds_log_and_a_reader_behind_reads_whole(
        tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)
    key, secret = store.create_key("renamed", now=NOW)
    revoked, revoked_secret = store.create_key("revoked", now=NOW)
    store.close()
    pruning, behind = (KeyDirectory(path, clock=lambda: NOW) for _ in range(2))

    async def run() -> None:
        await pruning.refresh()
        await behind.refresh()  # (a worker whose next poll comes after the pruning)
        assert pruning.authenticate(secret).key is not None
        _older_build_writes(path, key.id, revoked.id)
        assert _log_size(path) > WRITES
        await pruning.refresh()
        assert _log_size(path) <= KEPT  # main: 12,00x, and growing with each write
        for directory in (pruning, behind):
            if directory is behind:
                await behind.refresh()  # its position is gone: read whole
            with pytest.raises(AuthenticationFailed, match="blocked"):
                directory.authenticate(secret)
            with pytest.raises(AuthenticationFailed, match="Incorrect"):
                directory.authenticate(revoked_secret)
            assert directory.key_count == 1
        # The log pruned still serves a reader at its end: the next change is read alone.
        writer = KeyStore.open(path)
        _, made = writer.create_key("after", now=NOW)
        writer.close()
        for directory in (pruning, behind):
            await directory.refresh()
            assert directory.authenticate(made).key is not None
            await directory.close()

    asyncio.run(run())


def test_opening_the_store_prunes_a_log_an_older_build_grew(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)
    key, _ = store.create_key("renamed", now=NOW)
    revoked, _ = store.create_key("revoked", now=NOW)
    store.close()
    _older_build_writes(path, key.id, revoked.id)
    KeyStore.open(path).close()  # (the CLI's `keys list` opens it so)
    assert _log_size(path) == KEPT  # main: 12,00x
    read = KeyStore.open(path)
    whole = read.everything()
    assert read.changes_since(whole.position, whole.mark) is not None  # its end is kept
    assert read.prune_log() == 0  # nothing more to prune
    read.close()
