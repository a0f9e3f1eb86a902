"""A root CLI killed mid-write (`sudo azure-openai-proxy keys ...`, SIGKILL while its
write transaction is open) leaves the database's -wal and -shm files behind: they are
the database owner's, not root's, so the gateway, as that user, opens and writes the
database after it (SQLite, running as root, gives a -wal or -shm file it makes its
database file's owner; the store makes a new database its directory's owner before the
first write). Checked in session 27: not a bug; this pins it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from azure_openai_proxy.store.keys import KeyStore
from tests.support import as_nobody, readable_directory

NOBODY = 65534
_HOLD_A_WRITE = """
import sys, time
from pathlib import Path
from azure_openai_proxy.store.keys import KeyStore
store = KeyStore.open(Path(sys.argv[1]))
store.create_key("made-by-root", now=1.0e9)
store._db.execute("BEGIN IMMEDIATE")
store._db.execute("UPDATE governance_version SET version = version + 1")
print("writing", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("made_by", ["root", "the gateway"])
def test_the_gateway_writes_after_a_root_cli_was_killed_mid_write(made_by: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with readable_directory() as top:
        os.chown(top, NOBODY, NOBODY)  # the gateway user's data volume
        database = top / "gateway.db"
        if made_by == "the gateway":
            with as_nobody():
                KeyStore.open(database).close()
        cli = subprocess.Popen([sys.executable, "-c", _HOLD_A_WRITE, str(database)],
                               stdout=subprocess.PIPE, text=True)
        try:
            assert cli.stdout is not None and cli.stdout.readline().strip() == "writing"
        finally:
            cli.send_signal(signal.SIGKILL)
            cli.wait(timeout=30)
        left = {path.name: path.stat().st_uid for path in top.iterdir()}
        assert left == {"gateway.db": NOBODY, "gateway.db-wal": NOBODY,
                        "gateway.db-shm": NOBODY}
        with as_nobody():
            store = KeyStore.open(database)
            try:
                store.create_key("by-the-gateway", now=1.0e9)
                names = sorted(key.name for key in store.list_keys())
            finally:
                store.close()
        assert names == ["by-the-gateway", "made-by-root"]
