"""A gateway killed (SIGKILL, the OOM killer) leaves its database's -wal and -shm, marked
as that file's (store/replaced.py `mark_beside`); started again on the same file it must
apply them (they hold its last writes), never take them for a replaced file's. The
killed process is a real one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.replaced import stale_beside

_KILLED = """
import sys
from pathlib import Path
from azure_openai_proxy.store.keys import KeyStore
store = KeyStore.open(Path(sys.argv[1]))
print(store.create_key("last", now=1.0)[1], flush=True)  # in its -wal only
sys.stdin.readline()
"""


def _keeps_user_attributes(directory: Path) -> bool:
    probe = directory / "probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    return True


def test_a_restart_after_a_kill_applies_its_own_wal(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)
    store.create_key("first", now=1.0)
    store.close()
    killed = subprocess.Popen([sys.executable, "-c", _KILLED, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert killed.stdout is not None
    secret = killed.stdout.readline().strip()
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0 and path.with_name(path.name + "-shm").exists()
    if _keeps_user_attributes(tmp_path):  # (else no mark: SQLite's own rule)
        assert os.getxattr(wal, "user.azure-openai-proxy.database")  # its own mark
    assert stale_beside(path) is None

    directory = KeyDirectory(path, clock=lambda: 2.0)  # the restart

    async def run() -> None:
        await directory.start()
        assert directory.key_count == 2  # `last`, from the -wal
        assert directory.authenticate(secret).key is not None
        await directory.call(lambda store: store.create_key("after", now=2.0))  # not 503
        await directory.close()

    asyncio.run(run())
    store = KeyStore.open(path)  # the CLI
    try:
        assert {key.name for key in store.list_keys()} == {"first", "last", "after"}
    finally:
        store.close()
