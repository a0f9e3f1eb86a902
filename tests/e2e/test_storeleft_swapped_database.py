"""A running gateway (its key directory, its usage ledger) whose database is restored from
a copy that went its own way with as many writes (the same change counter), the way to
replace a database in use (`sqlite3 gateway.db ".restore copy.db"`: SQLite's backup API,
into the same file): the key revoked in the copy was let in for good (only the counter
was asked). Now it is refused within a poll or two, the copy's keys are served, and
what the gateway writes after goes to the file, which stays sound. The same with the
copy moved over the file (not the way, but done)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import chat_status
from tests.e2e.test_virtual_keys import ADMIN_KEY, Governed, governed_gateway
from tests.unit.test_revkeydir_replaced import _restore as _copy
from tests.waiting import until


def _keys_with_usage(path: Path) -> set[str]:
    """The keys the ledger in `path` has records of."""
    store = LedgerStore.open(path)
    try:
        return {record.key_id for record in store.records() if record.key_id}
    finally:
        store.close()


def two_keys(governed: Governed, tmp_path: Path,
             ) -> tuple[str, Path, Path, tuple[str, str], tuple[str, str]]:
    """The gateway's URL, its database, a path beside it for another, and the (id,
    secret) of two keys made there, `kept` and `revoked`."""
    return (governed.server.url, governed.database, tmp_path / "other.db",
            governed.key("kept"), governed.key("revoked"))


def test_a_database_moved_into_place_under_a_running_gateway_is_followed(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        url, path, other, (_, kept), (revoked_id, revoked) = two_keys(governed, tmp_path)
        assert chat_status(url, kept) == 200 and chat_status(url, revoked) == 200
        _copy(path, other)
        _, only_here = governed.key("only-here")  # one more write in each
        copy = KeyStore.open(other)
        copy.delete_key(revoked_id)
        assert copy.version() == governed.store.version()  # the same change counter
        copy.close()
        _copy(other, path)  # `.restore`
        until(lambda: chat_status(url, revoked) == 401, 15,
              "the revoked key is still let in")  # main: for good
        assert chat_status(url, only_here) == 401 and chat_status(url, kept) == 200
        made = httpx.post(url + "/admin/keys", json={"name": "after"}, timeout=30,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert made.status_code == 201, made.text
        assert chat_status(url, made.json()["key"]) == 200
        until(lambda: made.json()["id"] in _keys_with_usage(path), 15,
              "the last request's record never reached the file")  # (the ledger's writes)
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            names = {row[0] for row in raw.execute("SELECT name FROM keys")}
        raw.close()
        assert names == {"kept", "after"}


def test_a_database_moved_into_place_under_a_running_gateway_is_read_as_moved(
        tmp_path: Path, emulator: Emulator, start_gateway: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """The same copy moved over the file (`mv`: another inode, the replaced file's -wal
    left beside it by SQLite): its keys are served as the moved file holds them (the
    open connection read the replaced file for good), and the log says what to do."""
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        url, path, other, (_, kept), (revoked_id, revoked) = two_keys(governed, tmp_path)
        assert chat_status(url, revoked) == 200
        _copy(path, other)
        copy = KeyStore.open(other)
        copy.delete_key(revoked_id)
        _, made_there = copy.create_key("made-there", now=time.time())
        copy.close()
        governed.store.close()
        os.replace(other, path)
        until(lambda: chat_status(url, revoked) == 401, 15,
              "the revoked key is still let in")  # main: for good
        assert chat_status(url, made_there) == 200 and chat_status(url, kept) == 200
        assert "was replaced by another file while in use" in caplog.text
        assert ".restore" in caplog.text
