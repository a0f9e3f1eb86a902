"""Stateful Azure objects stay on the resource that created them.

A file, a batch, a stored response or a vector store exists on one Azure resource. When
a pool spans several resources (regions), `GET files/{id}`, `batches` with an
`input_file_id`, or `responses` with a `previous_response_id` must go back to the
resource that created the object, not wherever the balancer would send them. The
gateway remembers, per worker, which deployment created each id it saw answered (a
bounded LRU), and `ResourceAffinity.home_of` finds the id a request refers to.

Pure: plain data in, plain data out. Ids are remembered only for what went through this
worker; with `--workers N` a follow-up call may land on a worker that has not seen the
id, and then goes where the pool sends it (as without affinity).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

__all__ = ["ResourceAffinity", "ids_referenced"]

# Body fields that name an object created earlier.
_REFERENCE_FIELDS = ("previous_response_id", "input_file_id", "file_id", "vector_store_id",
                     "assistant_id", "thread_id")
# Path roots whose second segment is an object id (files/{id}, batches/{id}/cancel, ...).
_ID_ROOTS = frozenset({"files", "batches", "responses", "vector_stores", "assistants", "threads",
                       "uploads", "conversations"})

Home = tuple[str, str]  # (endpoint, deployment name)


def ids_referenced(operation: str, body: Mapping[str, Any] | None) -> list[str]:
    """The object ids a resource request refers to, the path's first."""
    ids: list[str] = []
    parts = operation.split("/")
    if len(parts) >= 2 and parts[0] in _ID_ROOTS:
        ids.append(parts[1])
    if body:
        for field in _REFERENCE_FIELDS:
            value = body.get(field)
            if isinstance(value, str) and value:
                ids.append(value)
    return ids


class ResourceAffinity:
    """id -> the (endpoint, deployment) that created it; least recently used forgotten."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._homes: OrderedDict[str, Home] = OrderedDict()

    def remember(self, object_id: str, home: Home) -> None:
        self._homes[object_id] = home
        self._homes.move_to_end(object_id)
        if len(self._homes) > self._capacity:
            self._homes.popitem(last=False)

    def home_of(self, ids: list[str]) -> Home | None:
        for object_id in ids:
            home = self._homes.get(object_id)
            if home is not None:
                self._homes.move_to_end(object_id)
                return home
        return None

    def __len__(self) -> int:
        return len(self._homes)
