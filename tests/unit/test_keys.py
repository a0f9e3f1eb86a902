"""Virtual keys: secrets, allow-lists, states, and the store's tables (SQLite in a
temporary directory: the real thing, on a real file)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from azure_openai_proxy.governance.keys import (
    SECRET_PREFIX,
    allowed_names,
    display_prefix,
    key_state,
    key_view,
    model_allowed,
    new_secret,
    parse_expiry,
    parse_limits,
    parse_models,
    presented_hash_valid,
    secret_hash,
)
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey
from azure_openai_proxy.store.keys import KeyStore, StoreConflict, StoreNotFound


def a_key(**fields: object) -> VirtualKey:
    return VirtualKey(id="key_1", name="k", secret_hash=secret_hash("s"), prefix="sk-aop-x",
                      **fields)  # type: ignore[arg-type]


def test_secrets_are_prefixed_random_and_stored_as_hashes() -> None:
    one, two = new_secret(), new_secret()
    assert one.startswith(SECRET_PREFIX) and one != two and len(one) == len(SECRET_PREFIX) + 43
    assert secret_hash(one) != one and len(secret_hash(one)) == 64
    assert display_prefix(one) == one[:13]


def test_allow_lists_take_names_and_patterns() -> None:
    assert model_allowed((), "anything")
    assert model_allowed(("gpt-4o",), "gpt-4o")
    assert not model_allowed(("gpt-4o",), "gpt-4o-mini", "o3-mini")
    assert model_allowed(("gpt-4o*",), "gpt-4o-mini")
    assert model_allowed(("o3-mini",), "my-alias", "o3-mini")  # the served model counts
    assert not model_allowed(("gpt-4o",), None)
    assert allowed_names(("gpt-4o*", "o3"), ["o3", "gpt-4o", "gpt-35-turbo", "gpt-4o-mini"]) == [
        "o3", "gpt-4o", "gpt-4o-mini"]


def test_states() -> None:
    team = Team(id="t", name="t")
    assert key_state(a_key(), None, 0) == "active"
    assert key_state(a_key(blocked=True), None, 0) == "blocked"
    assert key_state(a_key(expires_at=10.0), None, 10.0) == "expired"
    assert key_state(a_key(expires_at=10.0), None, 9.9) == "active"
    assert key_state(a_key(), Team(id="t", name="t", blocked=True), 0) == "team_blocked"
    assert key_state(a_key(), team, 0) == "active"


def test_the_old_secret_works_until_the_end_of_the_grace_period() -> None:
    key = a_key(previous_secret_hash=secret_hash("old"), previous_valid_until=100.0)
    assert presented_hash_valid(key, secret_hash("s"), 1e12)
    assert presented_hash_valid(key, secret_hash("old"), 99.0)
    assert not presented_hash_valid(key, secret_hash("old"), 100.0)
    assert not presented_hash_valid(key, secret_hash("other"), 0)


def test_parsing_what_people_type() -> None:
    assert parse_limits({"rpm": 5, "tpm": None, "other": 1}) == {"rpm": 5, "tpm": None}
    for bad in ({"rpm": 0}, {"rpm": "5"}, {"tpm": True}, {"budget_usd": -1},
                {"budget_period": "yearly"}):
        with pytest.raises(ValueError):
            parse_limits(bad)
    assert parse_expiry("30d", 100.0) == 100.0 + 30 * 86400
    assert parse_expiry("2026-01-01T00:00:00", 0) == 1767225600.0
    assert parse_expiry("2026-01-01T01:00:00+01:00", 0) == 1767225600.0
    assert parse_expiry(None, 0) is None and parse_expiry("never", 0) is None
    for wrong in ("soon", "", "30x", []):
        with pytest.raises(ValueError):
            parse_expiry(wrong, 0)
    assert parse_models("gpt-4o, o3*,") == ("gpt-4o", "o3*")
    assert parse_models(["a"]) == ("a",)
    with pytest.raises(ValueError):
        parse_models([1])


def test_a_view_never_shows_the_secret_or_its_hash() -> None:
    key = a_key(previous_secret_hash=secret_hash("old"), previous_valid_until=1.0)
    shown = str(key_view(key))
    assert secret_hash("s") not in shown and secret_hash("old") not in shown


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path / "sub" / "gateway.db")


def test_every_write_bumps_the_version(store: KeyStore) -> None:
    versions = [store.version()]
    team = store.create_team("research", limits=Limits(rpm=3), now=1.0)
    versions.append(store.version())
    key, secret = store.create_key("k1", team="research", models=("gpt-4o",),
                                   limits=Limits(tpm=100), now=2.0)
    versions.append(store.version())
    store.update_key(key.id, {"limits": {"rpm": 7}})
    versions.append(store.version())
    store.rotate_key("k1", grace_seconds=60, now=3.0)
    versions.append(store.version())
    store.delete_key(key.id)
    versions.append(store.version())
    store.delete_team(team.id)
    versions.append(store.version())
    assert versions == sorted(set(versions)) and len(versions) == 7
    assert key.secret_hash == secret_hash(secret) and key.team_id == team.id


def test_keys_round_trip(store: KeyStore) -> None:
    key, _ = store.create_key("k", models=("a", "b*"), limits=Limits(rpm=1, max_parallel=2),
                              expires_at=50.0, metadata={"owner": "ann"}, now=1.0)
    assert store.key(key.id) == key and store.key("k") == key
    changed = store.update_key("k", {"limits": {"tpm": 9}, "blocked": True})
    assert changed.limits == Limits(rpm=1, tpm=9, max_parallel=2) and changed.blocked
    version, keys, teams = store.snapshot()
    assert keys == [changed] and teams == [] and version == store.version()


def test_rotation_keeps_the_old_secret_for_the_grace_only(store: KeyStore) -> None:
    key, first = store.create_key("k", now=1.0)
    rotated, second = store.rotate_key(key.id, grace_seconds=60, now=10.0)
    assert rotated.previous_secret_hash == secret_hash(first)
    assert rotated.previous_valid_until == 70.0 and rotated.secret_hash == secret_hash(second)
    again, _ = store.rotate_key(key.id, grace_seconds=0, now=20.0)
    assert again.previous_secret_hash is None and again.previous_valid_until is None


def test_store_rules(store: KeyStore) -> None:
    store.create_team("t", now=1.0)
    with pytest.raises(StoreConflict):
        store.create_team("t", now=1.0)
    with pytest.raises(StoreNotFound):
        store.create_key("k", team="nope", now=1.0)
    store.create_key("k", team="t", now=1.0)
    with pytest.raises(StoreConflict):
        store.delete_team("t")  # it has a key
    store.create_key("k", now=1.0)
    with pytest.raises(StoreConflict):
        store.key("k")  # two keys share the name: the id is needed
    with pytest.raises(StoreNotFound):
        store.delete_key("missing")
    assert len(store.list_keys()) == 2  # the failed writes left nothing behind


def test_two_connections_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    gateway, cli = KeyStore.open(path), KeyStore.open(path)
    seen = gateway.version()
    cli.create_key("from-the-cli", now=time.time())
    assert gateway.version() != seen
    assert [k.name for k in gateway.snapshot()[1]] == ["from-the-cli"]
