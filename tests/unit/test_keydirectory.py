"""The key directory over a real SQLite key store: what a secret opens, and for how long
a remembered secret keeps opening it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.store.keys import KeyStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    store = KeyStore.open(tmp_path / "gateway.db")
    yield store
    store.close()


def _loaded(path: Path, clock: Clock) -> KeyDirectory:
    directory = KeyDirectory(path, clock=clock)
    asyncio.run(directory.refresh())
    return directory


def _reload(directory: KeyDirectory) -> None:
    asyncio.run(directory.refresh())


def test_a_known_secret_opens_the_same_caller_without_hashing_again(
        store: KeyStore, tmp_path: Path) -> None:
    clock = Clock()
    key, secret = store.create_key("a", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    caller = directory.authenticate(secret)
    assert caller.key is not None and caller.key.id == key.id
    assert directory.authenticate(secret) is caller  # remembered, not made again
    with pytest.raises(AuthenticationFailed):
        directory.authenticate(secret + "x")
    asyncio.run(directory.close())


def test_a_remembered_secret_stops_at_expiry_and_at_a_revocation(
        store: KeyStore, tmp_path: Path) -> None:
    clock = Clock()
    _, first = store.create_key("a", expires_at=clock.now + 60, now=clock.now)
    revoked, second = store.create_key("b", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    directory.authenticate(first)
    directory.authenticate(second)
    clock.now += 60
    with pytest.raises(AuthenticationFailed, match="expired"):
        directory.authenticate(first)
    store.update_key(revoked.id, {"blocked": True})
    _reload(directory)
    with pytest.raises(AuthenticationFailed, match="blocked"):
        directory.authenticate(second)
    store.delete_key(revoked.id)
    _reload(directory)
    with pytest.raises(AuthenticationFailed):
        directory.authenticate(second)
    asyncio.run(directory.close())


def test_a_rotated_secret_opens_until_its_grace_ends(store: KeyStore, tmp_path: Path) -> None:
    clock = Clock()
    key, old = store.create_key("a", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    directory.authenticate(old)
    _, new = store.rotate_key(key.id, grace_seconds=30, now=clock.now)
    _reload(directory)
    assert directory.authenticate(old).key is not None  # in its grace period
    assert directory.authenticate(new).key is not None
    clock.now += 30
    with pytest.raises(AuthenticationFailed):
        directory.authenticate(old)
    assert directory.authenticate(new).key is not None
    asyncio.run(directory.close())


def test_whether_a_budget_applies_is_decided_with_the_key_and_follows_its_changes(
        store: KeyStore, tmp_path: Path) -> None:
    from azure_openai_proxy.gateway.budgethold import budgeted
    from azure_openai_proxy.governance.model import Limits

    clock = Clock()
    store.create_team("budgeted", limits=Limits(budget_usd=5.0), now=clock.now)
    store.create_team("free", now=clock.now)
    plain, plain_secret = store.create_key("plain", team="free", now=clock.now)
    _, soft_secret = store.create_key("soft", limits=Limits(soft_budget_usd=1.0),
                                      now=clock.now)
    _, team_secret = store.create_key("team", team="budgeted", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    decided = {secret: directory.authenticate(secret)
               for secret in (plain_secret, soft_secret, team_secret)}
    assert [caller.budgeted for caller in decided.values()] == [False, True, True]
    for caller in decided.values():  # the decision is the one the limits give
        undecided = type(caller)(None, caller.key, caller.team)
        assert undecided.budgeted is None and budgeted(undecided) is caller.budgeted
    store.update_key(plain.id, {"limits": {"budget_usd": 2.0}})
    _reload(directory)
    assert directory.authenticate(plain_secret).budgeted is True
    asyncio.run(directory.close())


def _gateway(directory: KeyDirectory, client_keys: list[str]) -> Gateway:
    from azure_openai_proxy.config import load_settings
    from azure_openai_proxy.gateway.balancer import Balancer
    from azure_openai_proxy.gateway.pipeline import Gateway
    from azure_openai_proxy.upstream.fast import FastTransport

    settings = load_settings({"client_keys": client_keys, "deployment_config": [{
        "deployment_name": "gpt-4o", "model_name": "gpt-4o",
        "endpoint": "http://127.0.0.1:9/", "api_key": "azure-key"}]}, {})
    return Gateway(settings, FastTransport(settings.upstream), Balancer(settings),
                   directory=directory)


def test_a_bearer_header_seen_before_opens_the_same_key_as_its_secret(
        store: KeyStore, tmp_path: Path) -> None:
    clock = Clock()
    key, secret = store.create_key("a", expires_at=clock.now + 60, now=clock.now)
    _, other = store.create_key("b", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    gateway = _gateway(directory, ["static-key"])
    bearer = {"Authorization": f"Bearer {secret}"}
    first = gateway.authenticate(bearer)
    assert first.key is not None and first.key.id == key.id
    assert directory.authenticate_bearer(f"Bearer {secret}") is first  # remembered
    assert gateway.authenticate(bearer) is first
    # Another scheme is never remembered for the api-key that came with it.
    basic = {"Authorization": "Basic abc", "api-key": other}
    assert gateway.authenticate(basic).key != first.key
    assert directory.authenticate_bearer("Basic abc") is None
    with pytest.raises(AuthenticationFailed):
        gateway.authenticate({"Authorization": "Basic abc", "api-key": "wrong"})
    # ...even one exactly as long as `Bearer <secret>` (past remember_bearer's length
    # guard): remembered, it alone would open the key that came beside it once.
    same_length = "Basic " + "x" * (len(other) + 1)
    assert gateway.authenticate({"Authorization": same_length, "api-key": other}).key
    assert directory.authenticate_bearer(same_length) is None
    with pytest.raises(AuthenticationFailed):
        gateway.authenticate({"Authorization": same_length})
    clock.now += 61  # expired: the remembered header stops with its secret
    assert directory.authenticate_bearer(f"Bearer {secret}") is None
    with pytest.raises(AuthenticationFailed):
        gateway.authenticate(bearer)
    clock.now -= 61
    assert gateway.authenticate(bearer) is not None
    store.delete_key(key.id)
    _reload(directory)  # a revocation forgets every remembered header
    assert directory.authenticate_bearer(f"Bearer {secret}") is None
    with pytest.raises(AuthenticationFailed):
        gateway.authenticate(bearer)
    asyncio.run(directory.close())


def test_only_the_plain_spelling_of_a_bearer_header_is_remembered(
        store: KeyStore, tmp_path: Path) -> None:
    # A header padded with blanks opens the key (the token is stripped), but remembering
    # every padding would let one key holder fill the table with entries of up to a
    # whole header (64 KiB) each: 4096 of them, about 256 MiB per worker.
    clock = Clock()
    key, secret = store.create_key("a", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    gateway = _gateway(directory, ["static-key"])
    for padding in (" ", "  ", " " * 1000, " \t"):
        padded = f"Bearer{padding}{secret}" if padding != " " else f"Bearer {secret} "
        caller = gateway.authenticate({"Authorization": padded})
        assert caller.key is not None and caller.key.id == key.id  # still opens it
        assert directory.authenticate_bearer(padded) is None  # but is not remembered
    for plain in (f"Bearer {secret}", f"bearer {secret}"):
        caller = gateway.authenticate({"Authorization": plain})
        assert directory.authenticate_bearer(plain) is caller
    asyncio.run(directory.close())


def test_a_remembered_bearer_header_follows_its_teams_changes(
        store: KeyStore, tmp_path: Path) -> None:
    # The key's own row never changes here: a team's budget added, its block and its
    # unblock reach the key's remembered header at the next reload all the same.
    clock = Clock()
    team = store.create_team("t", now=clock.now)
    store.create_key("a", team="t", now=clock.now)
    key, secret = store.create_key("b", team="t", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    gateway = _gateway(directory, ["static-key"])
    bearer = {"Authorization": f"Bearer {secret}"}
    assert gateway.authenticate(bearer).budgeted is False
    assert directory.authenticate_bearer(bearer["Authorization"]) is not None
    store.update_team(team.id, {"limits": {"soft_budget_usd": 1.0}})
    _reload(directory)
    assert directory.authenticate_bearer(bearer["Authorization"]) is None
    assert gateway.authenticate(bearer).budgeted is True
    assert directory.authenticate_bearer(bearer["Authorization"]) is not None
    store.update_team(team.id, {"blocked": True})
    _reload(directory)
    with pytest.raises(AuthenticationFailed, match="team has been blocked"):
        gateway.authenticate(bearer)
    assert directory.authenticate_bearer(bearer["Authorization"]) is None  # not kept
    store.update_team(team.id, {"blocked": False, "limits": {"soft_budget_usd": None}})
    _reload(directory)
    caller = gateway.authenticate(bearer)
    assert caller.key is not None and caller.key.id == key.id and caller.budgeted is False
    asyncio.run(directory.close())


def test_a_remembered_bearer_header_stops_at_a_block_and_a_rotations_grace_end(
        store: KeyStore, tmp_path: Path) -> None:
    clock = Clock()
    key, old = store.create_key("a", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    gateway = _gateway(directory, ["static-key"])
    header = f"Bearer {old}"
    gateway.authenticate({"Authorization": header})
    _, new = store.rotate_key(key.id, grace_seconds=30, now=clock.now)
    _reload(directory)
    assert directory.authenticate_bearer(header) is None  # the reload forgot it
    assert gateway.authenticate({"Authorization": header}).key is not None  # in grace
    assert directory.authenticate_bearer(header) is not None
    clock.now += 30
    assert directory.authenticate_bearer(header) is None  # the grace ended
    with pytest.raises(AuthenticationFailed):
        gateway.authenticate({"Authorization": header})
    fresh = f"Bearer {new}"
    assert gateway.authenticate({"Authorization": fresh}).key is not None
    store.update_key(key.id, {"blocked": True})
    _reload(directory)
    with pytest.raises(AuthenticationFailed, match="blocked"):
        gateway.authenticate({"Authorization": fresh})
    asyncio.run(directory.close())


def test_a_remembered_key_without_expiry_opens_without_a_clock_read(
        store: KeyStore, tmp_path: Path) -> None:
    # Remembered until `_FOREVER` itself: at any time, and with no clock read per request.
    clock = Clock()
    _, secret = store.create_key("a", now=clock.now)
    directory = _loaded(tmp_path / "gateway.db", clock)
    header = "Bearer " + secret
    caller = directory.authenticate(secret)
    directory.remember_bearer(header, secret)
    reads = 0

    def counted() -> float:
        nonlocal reads
        reads += 1
        return clock.now

    directory._clock = counted
    clock.now += 10 * 365 * 86400.0
    assert directory.authenticate(secret) is caller
    assert directory.authenticate_bearer(header) is caller
    assert reads == 0
    asyncio.run(directory.close())
