"""The interpreter's switch interval while a background thread writes the ledger.

A thread that wants the GIL while the event loop runs Python gets it when the loop lets
it go by itself (around a poll) or, after waiting the switch interval
(`sys.getswitchinterval()`, 5 ms by default), when the loop is made to. A saturated
worker's loop rarely waits for its sockets, so the ledger writer, which takes the GIL
back some 90 times a batch of 2,000 records (each SQLite statement lets it go six times
in Python 3.11's sqlite3 module, and each pause between priced chunks once: counted with
callgrind, `bench.ledgerwriter`), waits up to 5 ms each time: ~0.45 s a batch however
little CPU the batch needs, so it falls behind a loop serving more than ~4,500 requests a
second. Measured (`python -m bench.inprocess --governed --requests 200000`, a loop at
~18,000 requests a second): the writer's queue grew to 51,000-92,000 records, and past
its bound (100,000) the event loop spools half of them itself, for about a second. With
a 0.5 ms interval it stayed under 2,200.

The writer's work is the same either way; the interval decides how long it waits for its
turn, and a thread waiting for the GIL is woken (a futex wake, on the loop's thread) at
every release the loop makes in the meantime, so shorter waits also mean fewer of those.
Under wrk (a loop that still polls between requests) the governed worker's throughput did
not move beyond the runs' spread (bench/README.md, session 22).

So the interval is `SHARED_INTERVAL` while any writer runs (each `GilShare` counts
once), and back to what it was when the last stops.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["SHARED_INTERVAL", "GilShare"]

SHARED_INTERVAL = 0.0005

_lock = threading.Lock()
_holders = 0
_saved = 0.0  # the switch interval before the first holder


class GilShare:
    """`hold()` lowers the interpreter's switch interval to `SHARED_INTERVAL` (never
    raises it) until every holder has called `release()`; each call pairs once."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        global _holders, _saved
        with _lock:
            if self._held:
                return
            if _holders == 0:
                _saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_saved, SHARED_INTERVAL))
            _holders += 1
            self._held = True

    def release(self) -> None:
        global _holders
        with _lock:
            if not self._held:
                return
            _holders -= 1
            if _holders == 0:
                sys.setswitchinterval(_saved)
            self._held = False
