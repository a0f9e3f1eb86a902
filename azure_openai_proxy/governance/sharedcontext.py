"""The chained-context counts shared by the worker processes of one server (`--workers
N`): what a Responses turn chained to an earlier response (or a conversation) reads
again, known to every worker, not only the one that answered the earlier turn.

Without it a turn that reached another worker than its predecessor reserved a guess
(gateway/chained.py `MISS_CEILING`, fitted to what the key's smallest TPM leaves): with
two workers about half of a conversation's turns held most of the key's minute while
they ran, and the key's other requests were refused meanwhile.

The parent creates the table (`context_table`, a governance/sharedlimits.py table of
another shape) before it starts the workers; each worker maps it and gives it to its
`ChainedContext` (`ChainedContext.share`). A row, found as the limits' are (open
addressing on a name's hash: here the key's id and the response's or conversation's,
so a key never reads another key's counts), is

    0     tag: the hash of "<key id>\\n<response or conversation id>"
    1     tokens: what a turn chained to it reads
    2     always 0 (the table's "total" column: nothing is held in a row, so that any row
          may be given to a new name when none is free near its place)
    3...  unused per-worker columns (the shared table's shape)

A row is written when a worker notes a response or a conversation, and read when a
worker does not know the one a turn names. When no row is free within `PROBES` of a
name's place, the first one probed is replaced: an entry lost that way (or when the
table cannot be used at all) costs what it cost before it existed, a guess. Each worker
keeps its own bounded per-key table in front of this one (gateway/chained.py), so one
key's flood of responses only makes other keys' turns on other workers guess.

A failure of the table (its file gone from under a worker's mapping is not one: the
mapping stays) is logged once and read as "not known": never an error for a request.
"""

from __future__ import annotations

import logging

from azure_openai_proxy.governance.sharedlimits import SharedLimits, SharedTable, tag_of

__all__ = ["CONTEXT_COLUMNS", "CONTEXT_SLOTS", "SharedContext", "context_table"]

log = logging.getLogger("azure_openai_proxy")

CONTEXT_COLUMNS = 3  # tag, tokens, total (0): the columns before the per-worker ones
_TOKENS = 1
# Responses and conversations known to every worker: 4x a worker's own table's total
# (gateway/chained.py `_TOTAL`). 2.6 MB with two workers, 5.8 MB with eight.
CONTEXT_SLOTS = 65_536
# A double holds every integer up to 2**53 exactly; a count past this is not one.
_MOST = 2**53


def context_table(workers: int, directory: str | None = None) -> SharedLimits:
    """A new chained-context table for `workers` workers (the caller `remove`s it), in
    `directory` (None: /dev/shm, else the temp dir)."""
    return SharedLimits.create(workers, slots=CONTEXT_SLOTS, directory=directory,
                               fixed=CONTEXT_COLUMNS)


class SharedContext:
    """One worker's use of the table: `put` and `get` a (key, id)'s tokens."""

    def __init__(self, table: SharedTable) -> None:
        self._table = table
        self._failed = False

    def put(self, key_id: str, name: str, tokens: int) -> None:
        if not 0 <= tokens < _MOST:
            return
        table, tag = self._table, _tag(key_id, name)  # hashed before the lock is taken
        try:
            table.lock()
            try:
                # `now` given: every row is idle (its total is 0), so a name finds a row
                # whenever none is free near its place
                row = table.claim(tag, now=0.0)
                if row is not None:
                    table.cells[row + _TOKENS] = float(tokens)
            finally:
                table.unlock()
        except (OSError, ValueError) as exc:
            self._failure(exc)

    def get(self, key_id: str, name: str) -> int | None:
        """The tokens noted for `name` of `key_id`'s by any worker, or None."""
        table, tag = self._table, _tag(key_id, name)
        try:
            table.lock()
            try:
                row = table.find(tag)
                return None if row is None else int(table.cells[row + _TOKENS])
            finally:
                table.unlock()
        except (OSError, ValueError) as exc:
            self._failure(exc)
            return None

    def _failure(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning("the shared chained-context table failed (%s: %s): a turn chained "
                        "to another worker's response reserves a guess", type(exc).__name__, exc)


def _tag(key_id: str, name: str) -> float:
    return tag_of(f"{key_id}\n{name}")
