"""The key directory reads only what changed (the store's change log), and ends where a
whole reload would: on random histories of key and team writes (the CLI's, the admin
API's, and a writer that knows nothing of the log), with the log pruned short or not,
a directory that follows the changes authenticates every secret ever issued as one that
reads everything does, and hands `on_reload` the same limits by subject."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.governance.keys import secret_hash
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore, StoreConflict, StoreNotFound
from azure_openai_proxy.store.sqlite import connect
from tests.hand_edits import hand_write

NOW = 1_000_000.0

_index = st.integers(0, 3)
_sync = st.tuples(st.just("sync"), st.none(), st.none())
_operation = st.one_of(
    _sync, _sync, _sync, _sync,  # (often: each sync a read of the changes since the last)
    st.tuples(st.just("team"), _index, st.none() | st.integers(1, 3)),
    st.tuples(st.just("key"), st.none() | _index, st.none() | st.integers(1, 3)),
    st.tuples(st.just("block"), _index, st.booleans()),
    st.tuples(st.just("move"), _index, st.none() | _index),
    st.tuples(st.just("limit"), _index, st.none() | st.integers(1, 3)),
    st.tuples(st.just("expire"), _index, st.sampled_from([None, NOW - 1, NOW + 60])),
    st.tuples(st.just("rotate"), _index, st.sampled_from([0, 60])),
    st.tuples(st.just("revoke"), _index, st.none()),
    st.tuples(st.just("block_team"), _index, st.booleans()),
    st.tuples(st.just("limit_team"), _index, st.none() | st.integers(1, 3)),
    st.tuples(st.just("delete_team"), _index, st.none()),
    st.tuples(st.just("raw"), _index, st.none()),
)


class _Followed:
    """A directory and the last limits it handed `on_reload`."""

    def __init__(self, path: Path) -> None:
        self.directory = KeyDirectory(path, clock=lambda: NOW)
        self.limits: Mapping[str, Limits] | None = None
        self.directory.on_reload = self._reloaded

    def _reloaded(self, limits: Mapping[str, Limits]) -> None:
        self.limits = limits


def _outcome(directory: KeyDirectory, hashed: str) -> Any:
    try:
        caller, until = directory.caller_by_hash(hashed)
    except AuthenticationFailed as exc:
        return str(exc)
    return caller.key, caller.team, caller.budgeted, until


def _write(store: KeyStore, path: Path, op: str, ref: Any, value: Any,
           keys: list[str], teams: list[str], secrets: list[str]) -> None:
    key = keys[ref % len(keys)] if keys and isinstance(ref, int) else None
    team = teams[ref % len(teams)] if teams and isinstance(ref, int) else None
    limits = {"rpm": value} if value is not None else {"rpm": None}
    if op == "team":
        teams.append(store.create_team(f"t{len(teams)}", limits=Limits(rpm=value), now=NOW).id)
    elif op == "key":
        owner = teams[ref % len(teams)] if teams and ref is not None else None
        made, secret = store.create_key(f"k{len(keys)}", team=owner, limits=Limits(tpm=value),
                                        now=NOW)
        keys.append(made.id)
        secrets.append(secret)
    elif op == "rotate" and key:
        secrets.append(store.rotate_key(key, grace_seconds=value, now=NOW)[1])
    elif op == "raw" and key:  # a writer that knows nothing of the log (an older CLI)
        hand_write(path, "UPDATE keys SET blocked = 1 - blocked WHERE id = ?", key)
    elif key and op in ("block", "move", "limit", "expire", "revoke"):
        if op == "revoke":
            store.delete_key(key)
            return
        field = {"block": "blocked", "move": "team_id", "limit": "limits",
                 "expire": "expires_at"}[op]
        if op == "move":
            value = teams[value % len(teams)] if teams and value is not None else None
        store.update_key(key, {field: limits if op == "limit" else value})
    elif team and op in ("block_team", "limit_team"):
        store.update_team(team, {"blocked": value} if op == "block_team" else {"limits": limits})
    elif team and op == "delete_team":
        store.delete_team(team)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=st.lists(_operation, max_size=40), log_kept=st.sampled_from([1, 3, 10_000]))
def test_a_directory_following_the_changes_ends_where_a_whole_reload_does(
        tmp_path_factory: pytest.TempPathFactory, history: list[tuple[str, Any, Any]],
        log_kept: int) -> None:
    path = tmp_path_factory.mktemp("keydir") / "gateway.db"
    store = KeyStore(connect(path), log_kept=log_kept)
    keys: list[str] = []
    teams: list[str] = []
    secrets: list[str] = []
    # Two teams and three keys (in each team, and in none) known before the history.
    for op, ref in (("team", 0), ("team", 0), ("key", 0), ("key", 1), ("key", None)):
        _write(store, path, op, ref, None, keys, teams, secrets)

    async def run() -> None:
        followed = _Followed(path)
        await followed.directory.refresh()
        for op, ref, value in [*history, ("sync", None, None)]:
            if op != "sync":
                # (a team with keys, a name taken: refused, nothing written)
                with contextlib.suppress(StoreConflict, StoreNotFound):
                    _write(store, path, op, ref, value, keys, teams, secrets)
                continue
            await followed.directory.refresh()
            whole = _Followed(path)
            await whole.directory.refresh()
            hashes = [secret_hash(secret) for secret in secrets]
            assert [_outcome(followed.directory, h) for h in hashes] == \
                [_outcome(whole.directory, h) for h in hashes]
            assert followed.limits == whole.limits
            assert followed.directory.key_count == whole.directory.key_count
            await whole.directory.close()
        await followed.directory.close()

    try:
        asyncio.run(run())
    finally:
        store.close()


def test_a_write_reads_only_the_rows_it_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 2,000 keys, a revocation, a block and a new team are read back as one key, one
    deletion and one team, and a directory reads nothing else (main: every change read
    every key and team, in every worker)."""
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)
    made = [store.create_key(f"k{i}", now=NOW) for i in range(2000)]
    start = store.everything()
    followed = _Followed(path)
    whole_reads: list[int] = []
    everything = KeyStore.everything

    def counted(self: KeyStore) -> Any:
        whole_reads.append(1)
        return everything(self)

    monkeypatch.setattr(KeyStore, "everything", counted)

    async def run() -> None:
        await followed.directory.refresh()  # the first read: everything
        assert followed.directory.key_count == 2000 and whole_reads == [1]
        store.delete_key(made[7][0].id)
        store.update_key(made[8][0].id, {"blocked": True})
        store.create_team("late", now=NOW)
        await followed.directory.refresh()
        assert whole_reads == [1] and followed.directory.key_count == 1999
        assert followed.limits is not None and len(followed.limits) == 2000  # + the team
        with pytest.raises(AuthenticationFailed, match="blocked"):
            followed.directory.authenticate(made[8][1])
        with pytest.raises(AuthenticationFailed, match="Incorrect"):
            followed.directory.authenticate(made[7][1])
        await followed.directory.close()

    asyncio.run(run())
    changes = store.changes_since(start.position, start.mark)
    assert changes is not None and not changes.whole
    assert [key.id for key in changes.keys] == [made[8][0].id] and changes.keys[0].blocked
    assert changes.gone_keys == {made[7][0].id} and [t.name for t in changes.teams] == ["late"]
    assert changes.version == store.version() and changes.position > start.position
    again = store.changes_since(changes.position, changes.mark)
    assert again is not None and (again.keys, again.teams, again.gone_keys) == ([], [], set())
    store.close()


# The schema of version 1 (before the change log), as that version made it.
_SCHEMA_1 = """
CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE governance_version (id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL);
INSERT INTO governance_version (id, version) VALUES (1, 0);
CREATE TABLE teams (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, limits TEXT NOT NULL,
    blocked INTEGER NOT NULL DEFAULT 0, metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL);
CREATE TABLE keys (id TEXT PRIMARY KEY, name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
    team_id TEXT REFERENCES teams (id), models TEXT NOT NULL, limits TEXT NOT NULL,
    expires_at REAL, blocked INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
    previous_secret_hash TEXT, previous_valid_until REAL);
INSERT INTO schema_versions (component, version) VALUES ('keys', 1);
INSERT INTO teams VALUES ('team_1', 'research', '{"rpm": 5}', 0, '{}', 1.0);
INSERT INTO keys VALUES ('key_1', 'old', '%s', 'sk-aop-old', 'team_1', '[]', '{}',
    NULL, 0, '{}', 1.0, NULL, NULL);
UPDATE governance_version SET version = 2;
"""


def test_a_database_of_the_schema_before_the_log_opens_and_follows_changes(
        tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with sqlite3.connect(path) as old:
        old.executescript(_SCHEMA_1 % secret_hash("sk-aop-the-old-secret"))
    old.close()
    listed = KeyStore.reader(path)  # `keys list` reads it as it is, writing nothing
    assert [key.name for key in listed.list_keys()] == ["old"]
    listed.close()
    followed = _Followed(path)

    async def run() -> None:
        await followed.directory.refresh()  # opened for writing: the log is added
        caller = followed.directory.authenticate("sk-aop-the-old-secret")
        assert caller.key is not None and caller.team is not None
        assert followed.limits == {"key:key_1": Limits(), "team:team_1": Limits(rpm=5)}
        store = KeyStore.open(path)
        start = store.everything()
        store.update_team("research", {"blocked": True})
        _, secret = store.create_key("new", now=NOW)
        assert store.changes_since(start.position, start.mark) is not None  # the log reaches back
        await followed.directory.refresh()
        with pytest.raises(AuthenticationFailed, match="team has been blocked"):
            followed.directory.authenticate("sk-aop-the-old-secret")
        assert followed.directory.authenticate(secret).key is not None
        versions = store._db.execute("SELECT component, version FROM schema_versions")
        assert versions.fetchall() == [("keys", 2)]
        store.close()
        await followed.directory.close()

    asyncio.run(run())


def test_a_key_dropped_leaves_a_hash_another_key_holds_to_that_key(tmp_path: Path) -> None:
    """A hand edit gave key B the secret hash key A had before its rotation (A keeps it
    as its previous one, in its grace): revoking A must not take B's entry with it (a
    whole reload has B there)."""
    path = tmp_path / "gateway.db"
    store = KeyStore.open(path)
    a, old = store.create_key("a", now=NOW)
    b, _ = store.create_key("b", now=NOW)
    store.rotate_key(a.id, grace_seconds=60, now=NOW)
    followed = _Followed(path)

    async def run() -> None:
        await followed.directory.refresh()
        hand_write(path, "UPDATE keys SET secret_hash = ? WHERE id = ?", secret_hash(old), b.id)
        await followed.directory.refresh()
        store.delete_key(a.id)
        await followed.directory.refresh()
        caller = followed.directory.authenticate(old)
        assert caller.key is not None and caller.key.id == b.id
        await followed.directory.close()

    asyncio.run(run())
    store.close()
