"""Session 31 integration review: a flush returns once what was added before it is
written (one writer pass that began after the call), not after a second pass that only
comes on the writer's timer (0.5 s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.unit.test_ledger_writer import finished, stored, writer


def test_a_flush_on_an_idle_writer_returns_well_before_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    ledger = writer(path, interval=2)  # (0.5 s by default: 2 s, a busy machine's margin)
    ledger.start()
    try:
        time.sleep(0.1)  # the thread waiting on its timer
        for n in range(3):
            ledger.add(finished(n))
        began = time.monotonic()
        assert ledger.flush()
        took = time.monotonic() - began
        assert stored(path) == ["req-0", "req-1", "req-2"]
        assert took < 1.0, took
    finally:
        ledger.close()


def test_a_flush_during_a_pass_waits_for_the_next_pass(tmp_path: Path) -> None:
    """A record added while a pass is past its drain, then a flush: the pass in progress
    does not count, the record is in the database when the flush returns."""
    path = tmp_path / "gw.db"
    ledger = writer(path)
    maintain = ledger._maintain
    flushed: list[tuple[bool, bool]] = []
    once = threading.Event()

    def late_add() -> None:
        if not once.is_set() and ledger._thread is threading.current_thread():
            once.set()
            ledger.add(finished(99))
            flusher = threading.Thread(target=lambda: flushed.append(
                (ledger.flush(), "req-99" in stored(path))))  # as it returns
            flusher.start()
            time.sleep(0.1)  # the flush waits, this pass still in progress
        maintain()

    drain = ledger._drain

    def slow_drain() -> None:
        if once.is_set():
            time.sleep(0.2)  # a flush returned at the end of the pass before sees no row
        drain()

    ledger._maintain = late_add  # type: ignore[method-assign]
    ledger._drain = slow_drain  # type: ignore[method-assign]
    ledger.start()
    try:
        ledger.flush()  # asks for a maintenance pass: the hook runs in it
        assert once.wait(5)
        deadline = time.monotonic() + 5
        while not flushed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flushed == [(True, True)]
    finally:
        ledger.close()
