"""The interpreter's switch interval while a background thread writes the ledger.

A thread that wants the GIL while the event loop runs Python waits on a condition the
GIL's holder signals at every release; it asks the holder to let go only after a whole
switch interval (`sys.getswitchinterval()`, 5 ms by default) with no switch at all. An
event loop that lets the GIL go at every poll and takes it straight back (it is already
running; the woken thread is not) resets that wait each time, so under a saturated loop
the ledger writer, which takes the GIL back some 90 times a batch of 2,000 records (each
SQLite statement lets it go about six times in Python 3.11's sqlite3 module, each pause
between priced chunks once: callgrind, `bench.ledgerwriter`), hardly ever gets a turn.
Measured (`python -m bench.inprocess --governed`, a loop at ~18,000 requests a second, no
sockets): its queue grew to 51,000-68,000 records (59,700 of 60,000 in
tests/unit/test_gilshare.py); past its bound (100,000) the event loop spools half of them
itself, for about a second. With a 0.5 ms interval it stays within ~2,100.

What it costs: there, the writer's CPU per request rose from ~4 to ~10-12 µs and the
loop's by a few µs (forced switches; before, the writer did its work after the count,
unhindered). Under wrk at 32 clients (a loop that still polls between requests) neither
throughput nor the writer's CPU moved beyond the runs' spread, nor did 1,000 governed
streams' CPU per frame (bench/README.md, session 22). Other threads' CPU-bound work (a
batch file's check in `asyncio.to_thread`) is switched with the loop ten times as often,
and takes ~20-30 % longer under load.

So the interval is `SHARED_INTERVAL` while any writer's thread runs. The interval is the
interpreter's, one per process: so is the record of who holds it lowered (`_PROCESS`).
"""

from __future__ import annotations

import sys
import threading

__all__ = ["SHARED_INTERVAL", "GilShare"]

SHARED_INTERVAL = 0.0005


class _Holders:
    """Who holds the process's switch interval lowered, and what it was before."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.saved = 0.0  # the interval before the first holder
        self.lowered_to = 0.0  # what the holders set it to


_PROCESS = _Holders()


class GilShare:
    """`hold()` lowers the interpreter's switch interval to `SHARED_INTERVAL` (never
    raises it; again if something raised it since) until every holder has called
    `release()`; then it is put back as it was, unless something else set it meanwhile.
    Each share holds once."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        holders = _PROCESS
        with holders.lock:
            if self._held:
                return
            current = sys.getswitchinterval()
            if holders.count == 0:
                holders.saved = current
            if current > SHARED_INTERVAL:
                sys.setswitchinterval(SHARED_INTERVAL)
            holders.lowered_to = sys.getswitchinterval()  # as the interpreter rounds it
            holders.count += 1
            self._held = True

    def release(self) -> None:
        holders = _PROCESS
        with holders.lock:
            if not self._held:
                return
            holders.count -= 1
            self._held = False
            if holders.count == 0 and sys.getswitchinterval() == holders.lowered_to:
                sys.setswitchinterval(holders.saved)
