"""`realtime_limits.SessionKey`: what an open realtime session goes by, looked up again in
a real key directory (SQLite on disk, the clocks given): a key that expires while its
session is open, with no change in the database at all, ends the session; a secret
rotated out ends it at its grace's end; the same key version keeps the same caller; the
checks come at most every `KEY_CHECK_SECONDS` of the session's own clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.gateway.realtime_limits import KEY_CHECK_SECONDS, SessionKey
from azure_openai_proxy.governance.keys import secret_hash
from azure_openai_proxy.routing import Pool
from azure_openai_proxy.store.keys import KeyStore

NOW = 1_000_000.0
POOL = Pool("gpt-realtime", ())


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    store = KeyStore.open(tmp_path / "gw.db")
    try:
        yield store
    finally:
        store.close()


def loaded(path: Path, clock: Clock) -> KeyDirectory:
    directory = KeyDirectory(path, clock=clock)

    async def load() -> None:
        await directory.refresh(force=True)

    asyncio.run(load())
    return directory


def closed(directory: KeyDirectory) -> None:
    asyncio.run(directory.close())


def test_a_key_that_expires_while_its_session_is_open_ends_it(
    store: KeyStore, tmp_path: Path,
) -> None:
    _, secret = store.create_key("rt", expires_at=NOW + 60, now=NOW)
    wall = Clock(NOW)
    directory = loaded(tmp_path / "gw.db", wall)
    try:
        caller = directory.authenticate(secret)
        session = SessionKey(directory, secret_hash(secret), caller, "gpt-realtime", POOL)
        assert session.check() is None and session.caller is caller  # the same version
        wall.now = NOW + 60  # no reload: only time passed
        refusal = session.check()
    finally:
        closed(directory)
    assert isinstance(refusal, AuthenticationFailed)
    assert (refusal.code, refusal.message) == ("invalid_api_key", "This API key has expired.")


def test_a_secret_rotated_out_ends_its_session_when_its_grace_ends(
    store: KeyStore, tmp_path: Path,
) -> None:
    key, secret = store.create_key("rt", now=NOW)
    store.rotate_key(key.id, grace_seconds=30, now=NOW)
    wall = Clock(NOW)
    directory = loaded(tmp_path / "gw.db", wall)
    try:
        caller = directory.authenticate(secret)  # the old secret, within its grace
        session = SessionKey(directory, secret_hash(secret), caller, "gpt-realtime", POOL)
        assert session.check() is None
        wall.now = NOW + 30
        refusal = session.check()
    finally:
        closed(directory)
    assert isinstance(refusal, AuthenticationFailed)


def test_checks_are_due_every_key_check_seconds(store: KeyStore, tmp_path: Path) -> None:
    _, secret = store.create_key("rt", now=NOW)
    directory = loaded(tmp_path / "gw.db", Clock(NOW))
    try:
        session_clock = Clock(5.0)
        session = SessionKey(directory, secret_hash(secret), directory.authenticate(secret),
                             "gpt-realtime", POOL, clock=session_clock)
        assert not session.due()
        session_clock.now += KEY_CHECK_SECONDS
        assert session.due()
        assert session.check() is None
        assert not session.due()  # counted again from the check
    finally:
        closed(directory)
