"""The database opened with another tool (the `sqlite3` CLI) while the gateway is down,
then the gateway started: the tool's -wal carries no mark (store/replaced.py), and the
gateway must start and see the tool's committed writes, whether the tool still runs or
was killed (its -wal left with them), and whether the gateway's own last process was
killed first (its marked -wal, this file's, then written by the tool). Once opened, the
-wal is marked as this file's: the same database replaced afterwards (a backup moved
in) is still refused while that -wal is beside it.

(Seen passing on main too: no behaviour changed for these. What stays open: a tool's
process of a file that was then replaced leaves an unmarked -wal, applied as SQLite
does; nothing on disk tells it from the tool's -wal of this file.)

The tool is the real sqlite3 CLI, in a real process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.replaced import ReplacedInUse
from tests.unit.test_revstoreleft_replaced_wal import NOW, _with_backup

pytestmark = pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 CLI")

_KILLED_GATEWAY = """
import os, sys
from pathlib import Path
from azure_openai_proxy.store.keys import KeyStore
store = KeyStore.open(Path(sys.argv[1]))
store.create_key("gateway's", now=1.0)  # in its -wal
os.kill(os.getpid(), 9)
"""


def _names(store: KeyStore) -> set[str]:
    try:
        return {key.name for key in store.list_keys()}
    finally:
        store.close()


def _wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.mark.parametrize("gateway", ["stopped", "killed"])
@pytest.mark.parametrize("tool", ["killed", "running"])
def test_the_gateway_starts_with_a_tools_wal_and_sees_its_writes(
        tmp_path: Path, gateway: str, tool: str) -> None:
    path, backup, _, _ = _with_backup(tmp_path)
    expected = {"kept", "revoked"}
    if gateway == "killed":
        subprocess.run([sys.executable, "-c", _KILLED_GATEWAY, str(path)], timeout=60)
        assert _wal_size(path) > 0  # marked as this file's, with the gateway's key
        expected.add("gateway's")
    cli = subprocess.Popen(["sqlite3", str(path)], stdin=subprocess.PIPE, text=True,
                           stdout=subprocess.DEVNULL)
    try:
        assert cli.stdin is not None
        # A busy timeout as a tool's user sets one: this test's own look through the
        # -wal (`_tool_wrote`) may hold a read lock while the tool recovers the killed
        # writer's -wal (CI saw "database is locked" from the tool without it).
        cli.stdin.write(".timeout 10000\n"
                        "UPDATE keys SET name = 'by the tool' WHERE name = 'kept';\n"
                        "SELECT 'written';\n")
        cli.stdin.flush()
        deadline = time.monotonic() + 30
        while _wal_size(path) == 0 or (gateway == "killed" and not _tool_wrote(path)):
            assert time.monotonic() < deadline and cli.poll() is None
            time.sleep(0.05)
        if tool == "killed":
            cli.kill()
            cli.wait(30)
        expected = expected - {"kept"} | {"by the tool"}
        assert _names(KeyStore.reader(path)) == expected  # `keys list`
        assert _names(KeyStore.open(path)) == expected  # the gateway's start
    finally:
        if cli.poll() is None:
            assert cli.stdin is not None
            cli.stdin.close()
            cli.wait(30)
    # The -wal (the tool's, or its successor) is this file's now: a file moved over it
    # is not read through it.
    adopted = KeyStore.open(path)
    adopted.create_key("held", now=NOW)  # kept in the -wal by the process below
    os.replace(backup, path)
    try:
        with pytest.raises(ReplacedInUse):
            KeyStore.open(path)
    finally:
        adopted.close()


def _tool_wrote(path: Path) -> bool:
    """Whether the rename is committed (read through the -wal, as a reader does)."""
    return "by the tool" in _names(KeyStore.reader(path))
