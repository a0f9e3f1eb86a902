"""The one bounded cache: a dict with a maximum size, cleared when full."""

from __future__ import annotations

import pytest

from azure_openai_proxy.boundedcache import BoundedCache


def test_get_and_put() -> None:
    cache: BoundedCache[str, int] = BoundedCache(4)
    assert cache.get("a") is None
    assert cache.put("a", 1) == 1
    assert cache.get("a") == 1
    assert "a" in cache and "b" not in cache
    assert len(cache) == 1


def test_never_holds_more_than_maxsize() -> None:
    cache: BoundedCache[int, int] = BoundedCache(3)
    for i in range(100):
        cache.put(i, i)
        assert len(cache) <= 3
    assert cache.get(99) == 99  # the newest entry is always there


def test_cleared_when_a_new_key_would_pass_the_bound() -> None:
    cache: BoundedCache[str, str] = BoundedCache(2)
    cache.put("a", "1")
    cache.put("b", "2")
    cache.put("a", "one")  # an existing key is replaced, nothing is dropped
    assert (cache.get("a"), cache.get("b")) == ("one", "2")
    cache.put("c", "3")
    assert cache.get("a") is None and cache.get("b") is None
    assert cache.get("c") == "3" and len(cache) == 1


def test_get_is_the_dicts_own_method() -> None:
    # The hot path: one dict lookup and one call, no Python frame in between.
    cache: BoundedCache[str, int] = BoundedCache(2)
    assert type(cache.get).__name__ == "builtin_function_or_method"
    cache.put("a", 1)
    cache.clear()
    assert cache.get("a") is None and len(cache) == 0
    cache.put("b", 2)
    assert cache.get("b") == 2  # still the same table after clear()


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedCache(0)


def test_repr_shows_no_contents() -> None:
    cache: BoundedCache[str, str] = BoundedCache(8)
    cache.put("k", "secret-ish")
    assert repr(cache) == "BoundedCache(1/8)"
