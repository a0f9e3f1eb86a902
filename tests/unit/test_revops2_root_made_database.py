"""A database root makes in the gateway's directory (`sudo azure-openai-proxy keys
create` before the gateway's first start, in a data volume another user owns) is that
user's: it was root's, 0644, so the gateway, as its own user, read the keys but could
write nothing there (its usage ledger, an admin API change: "attempt to write a readonly
database")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from azure_openai_proxy.cli import main
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from tests.support import as_nobody, readable_directory

NOBODY = 65534


def test_a_database_root_makes_in_another_users_directory_is_that_users(
        capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with readable_directory() as top:
        os.chown(top, NOBODY, NOBODY)  # the gateway user's data volume
        database = top / "gateway.db"
        assert main(["keys", "create", "--name", "alice", "--database",
                     f"sqlite://{database}"]) == 0, capsys.readouterr().err
        assert sorted(p.name for p in top.iterdir()) == ["gateway.db"]  # none of root's
        with as_nobody():  # the gateway, as its user: it writes there
            store = KeyStore.open(database)
            try:
                store.create_key("bob", now=1.0e9)  # main: attempt to write a readonly database
            finally:
                store.close()
            LedgerStore.open(database).close()
        assert (database.stat().st_uid, database.stat().st_gid) == (NOBODY, NOBODY)
        assert sorted(k.name for k in KeyStore.reader(database).list_keys()) == ["alice", "bob"]


def test_roots_own_directory_keeps_roots_database(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    KeyStore.open(tmp_path / "gateway.db").close()
    assert (tmp_path / "gateway.db").stat().st_uid == 0
