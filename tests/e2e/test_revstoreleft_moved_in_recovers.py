"""A backup moved over the database of a running gateway (its key directory, its usage
ledger), the replaced file's -wal and -shm left beside it by SQLite: the moved file's
keys are served, admin writes are a 503 and usage records spool while that -wal is
there (opened with it, SQLite would apply the old file's pages to the backup: the
ledger did, storeleft). Once it and the -shm are removed the gateway follows the new
file by itself, no restart: admin writes work again and the spooled records reach it
(storeleft: the ledger had already written the old pages into the backup)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import chat_status
from tests.e2e.test_storeleft_swapped_database import _keys_with_usage, two_keys
from tests.e2e.test_virtual_keys import ADMIN_KEY, governed_gateway
from tests.unit.test_revkeydir_replaced import _restore as _copy
from tests.waiting import until


def _make_key(url: str, name: str) -> httpx.Response:
    return httpx.post(url + "/admin/keys", json={"name": name}, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"})


def test_a_moved_in_database_is_followed_again_once_the_old_wal_is_removed(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        url, path, other, (kept_id, kept), (revoked_id, revoked) = two_keys(governed, tmp_path)
        governed.known(revoked)
        _copy(path, other)  # before any request: no usage of `kept` in it
        copy = KeyStore.open(other)
        copy.delete_key(revoked_id)
        copy.close()
        governed.store.close()
        os.replace(other, path)
        until(lambda: chat_status(url, revoked) == 401, 15, "the revoked key is still let in")
        refused = _make_key(url, "refused")
        assert refused.status_code == 503, refused.text
        assert chat_status(url, kept) == 200  # its usage record: spooled
        time.sleep(1.5)  # (the ledger's turn: its flush is 1 s)
        for end in ("-wal", "-shm"):  # every process of the replaced file stopped
            path.with_name(path.name + end).unlink()
        until(lambda: _make_key(url, "after").status_code == 201, 15,
              "admin writes still refused")  # storeleft: refused for good if ext4 reused
        made = _make_key(url, "after-2").json()["key"]
        until(lambda: chat_status(url, made) == 200, 15)
        until(lambda: kept_id in _keys_with_usage(path), 15,
              "the record spooled meanwhile never reached the file")
    store = KeyStore.open(path)
    try:  # the backup's keys, not the old file's pages
        assert {key.name for key in store.list_keys()} == {"kept", "after", "after-2"}
    finally:
        store.close()
