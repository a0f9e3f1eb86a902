"""`BoundedCache`: the one memo table of the request path, a dict with a maximum size.

The gateway remembers a few derived values per request (a path's `Target`, an upstream
URL, a deployment's profile, a header prefix...). A handful of keys carry nearly all the
traffic, but some keys come from clients (paths, model names, header names), so every
such table needs a bound. This is that bound, once.

When full, the cache is **cleared**, not trimmed to its oldest entry:

- a hit stays exactly one `dict.get` (the bound method is the `get` attribute itself, no
  Python frame): an LRU would reorder on every hit, and an `OrderedDict` makes every hit
  about a third slower;
- evicting the oldest entry of a plain dict costs about a microsecond per insert once the
  table is full (CPython scans past the deleted slots at the front), clearing costs
  nothing per insert and gives the memory back;
- a table fills only when clients send endless distinct keys; then any policy misses
  on almost every request, and after a clear the few hot keys are back after one miss
  each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most `maxsize` entries; cleared when a new key would pass the bound.

    `cache.get(key)` is the dict's own `get`: the value, or None when the key is not
    there (so cached values are never None). `cache.put(key, value)` stores and returns
    `value`."""

    __slots__ = ("_data", "get", "maxsize")

    get: Callable[[K], V | None]

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: dict[K, V] = {}
        self.get = self._data.get

    def put(self, key: K, value: V) -> V:
        data = self._data
        if len(data) >= self.maxsize and key not in data:
            data.clear()
        data[key] = value
        return value

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"BoundedCache({len(self._data)}/{self.maxsize})"
