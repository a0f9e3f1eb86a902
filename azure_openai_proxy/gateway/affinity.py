"""Stateful Azure objects stay on the resource that created them.

A file, a batch, a stored response or a vector store exists on one Azure resource. When
a pool spans several resources (regions), `GET files/{id}`, `batches` with an
`input_file_id`, or `responses` with a `previous_response_id` must go back to the
resource that created the object, not wherever the balancer would send them. The
gateway remembers, per worker, which deployment created each id it saw answered (a
bounded LRU; a streamed response's as soon as its `response.created` event passes), and
`ResourceAffinity.home_of` finds the id a request refers to.

Pure: plain data in, plain data out. Ids are remembered only for what went through this
worker; with `--workers N` a follow-up call may land on a worker that has not seen the
id, and then goes where the pool sends it (as without affinity), unless a virtual key
made it: its home is recorded with its owner (gateway/ownership.py `Owned.home`), which
every worker reads and `learn`s.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from azure_openai_proxy.errors import MalformedBody

__all__ = [
    "MAX_REFERENCE_DEPTH",
    "MAX_REFERENCE_VALUES",
    "Home",
    "ReferenceKeyCased",
    "ReferencesUncheckable",
    "ResourceAffinity",
    "folded",
    "ids_referenced",
    "item_references",
]

# Keys whose value names an object created earlier (a string, or a list of them), at any
# depth of a body: `tool_resources.file_search.vector_stores[].file_ids`,
# `input[].content[].file_id`, `messages[].attachments[].file_id`, `tools[].vector_store_ids`...
_REFERENCE_FIELDS = frozenset({
    "previous_response_id", "input_file_id", "file_id", "file_ids", "vector_store_id",
    "vector_store_ids", "assistant_id", "thread_id", "training_file", "validation_file",
    "conversation",
})
# Never a reference: the client's own data (JSON schemas, a function's `parameters`, a
# structured output's `schema`, and `metadata` may use the same names for anything), and
# earlier outputs sent back as input (`annotations` citing a file, a file search's
# `results`): they quote a file, they do not give the model access to it.
_OPAQUE_FIELDS = frozenset({"metadata", "parameters", "schema", "json_schema", "annotations",
                            "results", "item_schema", "attributes", "headers"})
# Maps keyed by the client's own names, whose values may still name objects, so walked: a
# prompt's `variables` (a value may be an `input_file`), whose keys alone are the client's,
# and an eval's data rows (`item`, `sample`), every key below them the client's. A strict
# walk does not refuse those keys for their spelling (`File_Id` there is a name, not the
# parameter).
_KEYS_NAMED = {"variables": 1, "item": 2, "sample": 2}
# The names a strict walk (and `item_references`) reads: a body spelling one
# of them in other letters is refused (`ReferenceKeyCased`), since a frontend that binds JSON
# case-insensitively (ASP.NET Core's web defaults) would read an object the check did not.
_NAMES_READ = _REFERENCE_FIELDS | {"id", "type", "input", "items"}
# What a walk may cost: a body nested or spread past these is refused when checked
# (`strict`), and only partly read for affinity.
MAX_REFERENCE_DEPTH = 32
MAX_REFERENCE_VALUES = 50_000
# Path roots whose second segment is an object id (files/{id}, batches/{id}/cancel, ...).
_ID_ROOTS = frozenset({"files", "batches", "responses", "vector_stores", "assistants", "threads",
                       "uploads", "conversations"})
# Paths whose third segment is the id: `fine_tuning/jobs/{id}/...`,
# `chat/completions/{id}/...` (a stored chat completion).
_ID_AT_THIRD = frozenset({("fine_tuning", "jobs"), ("chat", "completions")})
# Where a Responses body (a conversation's items) lists items, some by reference.
_ITEM_LISTS = ("input", "items")

Home = tuple[str, str]  # (endpoint, deployment name)


class ReferencesUncheckable(MalformedBody):
    """A body too deep or too large for its references to be read at a bounded cost."""

    def __init__(self) -> None:
        super().__init__(
            f"The request body is nested deeper than {MAX_REFERENCE_DEPTH} levels or holds "
            f"more than {MAX_REFERENCE_VALUES} values where objects may be named.")


class ReferenceKeyCased(MalformedBody):
    """A checked body spelling a name the gateway reads in other letters
    (`Previous_Response_Id`): refused rather than guessing which one Azure would bind."""

    def __init__(self, field: str, name: str) -> None:
        super().__init__(f"Unrecognized request argument {field[:64]!r}: "
                         f"the parameter is spelled {name!r}.", param=name)


def folded(name: str) -> str:
    """`name` as a case-insensitive comparison sees it: upper-cased first, as .NET's
    OrdinalIgnoreCase does (dotless i -> `I`), then lower-cased (the Kelvin sign -> `k`)."""
    return name.upper().lower()


def check_cased(field: str) -> None:
    """Raise `ReferenceKeyCased` if `field` is another spelling of a name read."""
    if not (field.isascii() and field.islower()):  # else it is exact or no name read
        name = folded(field)
        if name in _NAMES_READ and name != field:
            raise ReferenceKeyCased(field, name)


def ids_referenced(operation: str, body: Mapping[str, Any] | None, *,
                   strict: bool = False) -> list[str]:
    """The object ids a resource request refers to: the path's first (a job's, under
    `fine_tuning/jobs/`), then every one its body names. Past the walk's bounds:
    `ReferencesUncheckable` when `strict`, else the ids found so far. `strict` also
    refuses a name read spelled in other letters (`ReferenceKeyCased`)."""
    ids: list[str] = []
    parts = operation.split("/")
    if len(parts) >= 2 and parts[0] in _ID_ROOTS:
        ids.append(parts[1])
    elif len(parts) >= 3 and (parts[0], parts[1]) in _ID_AT_THIRD:
        ids.append(parts[2])  # a job, a stored chat completion: on one resource too
    if body:
        try:
            _walk(body, ids, strict)
        except ReferencesUncheckable:
            if strict:
                raise
    return ids


def item_references(body: Mapping[str, Any] | None, *, strict: bool = True) -> list[str]:
    """The stored items a Responses `input` (or a conversation's `items`) names by
    reference: `{"type": "item_reference", "id": "msg_..."}`. Only top-level items can be
    references, and a checked body's size is bounded first (`ids_referenced`, which
    also refuses `Input`, `Type` or `Id` for the names). `strict`: a type spelled
    `Item_Reference` is refused (an enum bound case-insensitively would make it a
    reference); else, for routing, it is no reference."""
    if not body:
        return []
    ids: list[str] = []
    for field in _ITEM_LISTS:
        items = body.get(field)
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "item_reference":
                item_id = item.get("id")
                if isinstance(item_id, str) and item_id:
                    ids.append(item_id)
            elif strict and isinstance(kind, str) and folded(kind) == "item_reference":
                raise MalformedBody(f"Invalid value for '{field}[].type': "
                                    "'item_reference' is spelled in lower case.",
                                    param=f"{field}[].type")
    return ids


def _walk(body: Mapping[str, Any], ids: list[str], strict: bool = False) -> None:
    """Append to `ids` every reference in `body`, depth first, within the bounds."""
    budget = MAX_REFERENCE_VALUES
    # (node, depth, whose keys): 0 the API's, 1 this node's the client's, 2 all below too.
    stack: list[tuple[Any, int, int]] = [(body, 0, 0)]
    while stack:
        node, depth, named = stack.pop()
        if depth > MAX_REFERENCE_DEPTH:
            raise ReferencesUncheckable
        budget -= len(node)
        if budget < 0:
            raise ReferencesUncheckable
        if isinstance(node, list):
            stack.extend((item, depth + 1, named) for item in node
                         if isinstance(item, dict | list) and item)
            continue
        for field, value in node.items():
            if field in _REFERENCE_FIELDS:
                budget -= _add_reference(field, value, ids, strict)
                if budget < 0:
                    raise ReferencesUncheckable
                continue
            if strict and not named:
                check_cased(field)
            if isinstance(value, dict | list) and value and field not in _OPAQUE_FIELDS:
                stack.append((value, depth + 1,
                              2 if named == 2 else _KEYS_NAMED.get(field, 0) if not named else 0))


def _add_reference(field: str, value: Any, ids: list[str], strict: bool = False) -> int:
    """Append the ids `value` names; return how many values it holds (a list's items
    count against the walk's bound like any other values: it is refused before they are
    copied)."""
    if isinstance(value, str):
        if value:
            ids.append(value)
    elif isinstance(value, list):
        if len(value) > MAX_REFERENCE_VALUES:
            raise ReferencesUncheckable
        ids.extend(item for item in value if isinstance(item, str) and item)
        return len(value)
    elif field == "conversation" and isinstance(value, dict):  # {"id": "conv_..."}
        if strict:
            for name in value:
                check_cased(name)
        conversation = value.get("id")
        if isinstance(conversation, str) and conversation:
            ids.append(conversation)
    return 0


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

    def recorder(self, home: Home) -> Callable[[str], None]:
        """`remember` for ids `home` makes: a streamed response's, as its stream names it
        (normalize/responses_meter.py), so a call about it made while the stream still
        runs, or after the client left it, goes there too."""
        return lambda object_id: self.remember(object_id, home)

    def learn(self, homes: list[tuple[str, Home]]) -> bool:
        """`remember` the homes recorded with objects' owners (gateway/ownership.py),
        which every worker reads; whether any was new here (then a request about them,
        routed before they were, is routed again)."""
        learnt = False
        for object_id, home in homes:
            if self._homes.get(object_id) != home:
                self.remember(object_id, home)
                learnt = True
        return learnt

    def home_of(self, ids: list[str]) -> Home | None:
        for object_id in ids:
            home = self._homes.get(object_id)
            if home is not None:
                self._homes.move_to_end(object_id)
                return home
        return None

    def __len__(self) -> int:
        return len(self._homes)
