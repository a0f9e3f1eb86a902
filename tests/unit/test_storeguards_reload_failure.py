"""A failure of the limiter's `on_reload` while the key directory applies a read
(`_refresh`) was logged as "key store ... unavailable (RuntimeError); serving the N
keys known", and, once the next whole read applied, "available again": the database
had answered every time; what failed was the limiter. It is now logged as what it is,
with its traceback, and the keys are read whole and applied again at the next poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore

NOW = 1_000_000.0


def test_a_limiter_failing_on_a_change_is_logged_as_the_limiters_failure(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)
    _, secret = store.create_key("a", now=NOW)
    directory = KeyDirectory(path, poll_seconds=0.02, clock=lambda: NOW)
    reloads: list[int] = []

    def on_reload(limits: Mapping[str, Limits]) -> None:
        reloads.append(len(limits))
        if len(reloads) == 2:  # the change's
            raise RuntimeError("the limiter broke")

    directory.on_reload = on_reload

    async def run() -> None:
        await directory.start()
        store.create_key("b", now=NOW)  # the CLI's write: the next poll reads it
        for _ in range(1000):  # bounded: 20 s at most, usually two or three polls
            if len(reloads) >= 3:
                break
            await asyncio.sleep(0.02)
        assert len(reloads) >= 3  # applied again at a later poll
        assert directory.key_count == 2
        assert directory.authenticate(secret).key is not None
        await directory.close()

    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        asyncio.run(run())
    store.close()
    text = caplog.text
    assert "unavailable" not in text and "available again" not in text, text  # main: both
    failed = [r for r in caplog.records if "could not be applied" in r.getMessage()]
    assert len(failed) == 1, text
    assert "RuntimeError: the limiter broke" in failed[0].getMessage()
    assert failed[0].exc_info is not None  # where it failed: the traceback
