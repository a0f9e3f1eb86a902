"""The key directory's read of a file moved over its database while the replaced one's
-wal is beside it (`_read_replaced`, storeleft) handed the keys to the limiter
(`on_reload`) outside any guard: an exception there went out of `refresh` and ended
the poll task, the directory then following no change (a key revoked later let in)
until a restart. It is now logged, the known keys served, and the poll goes on (the
file read and applied again at the next poll)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.model import Limits
from tests.unit.test_revstoreleft_replaced_wal import NOW, _with_backup


def test_a_limiter_failing_on_a_moved_in_file_does_not_end_the_poll(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, backup, secrets, _ = _with_backup(tmp_path)
    directory = KeyDirectory(path, poll_seconds=0.02, clock=lambda: NOW)
    reloads: list[int] = []

    def on_reload(limits: Mapping[str, Limits]) -> None:
        reloads.append(len(limits))
        if len(reloads) == 2:  # the moved-in file's first read
            raise RuntimeError("limiter")

    directory.on_reload = on_reload

    async def run() -> None:
        await directory.start()
        assert directory.authenticate(secrets["revoked"]).key is not None
        os.replace(backup, path)  # the replaced file's -wal stays beside it
        for _ in range(1000):  # bounded: 20 s at most, usually three polls
            if len(reloads) >= 3:
                break
            await asyncio.sleep(0.02)
        poller = directory._poller
        assert poller is not None and not poller.done()  # storeleft: ended, RuntimeError
        assert len(reloads) >= 3  # read and applied again at a later poll
        with pytest.raises(AuthenticationFailed):
            directory.authenticate(secrets["revoked"])
        assert directory.authenticate(secrets["kept"]).key is not None
        await directory.close()

    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        asyncio.run(run())
    assert "could not be applied (RuntimeError)" in caplog.text
    assert not any(secret in caplog.text for secret in secrets.values())
