"""The journal child's crash loop (gateway/ledgerjournal.py `_take_over`): a child that
dies at every start hands its worker's journal to the worker's own thread, which writes
the unacknowledged records exactly once and every later record; and the metrics that
show it (observability/ledgerseries.py). Real child processes, really killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.journalfiles import write_ack
from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter
from azure_openai_proxy.governance.prices import Price, PriceTable
from azure_openai_proxy.observability.metrics import PrometheusMetrics
from azure_openai_proxy.store.ledger import LedgerStore
from tests.e2e.test_ledger_journal import journal, journal_files, writers_of
from tests.unit.test_ledger_writer import finished, stored
from tests.waiting import until

pytestmark = pytest.mark.slow  # (as test_ledger_journal.py: child processes, waits)


def _kill_every_child(ledger: JournalLedgerWriter, stop: threading.Event,
                      rewound: threading.Event, rewind: bool = True) -> None:
    """Kill each child the worker starts, at once (before it can write anything); after
    the first (`rewound` set then), the acknowledgement rewound to the journal's start,
    as a child killed between its commit and its acknowledgement leaves it."""
    deadline = time.monotonic() + 60
    killed: set[int] = set()
    while not stop.is_set() and time.monotonic() < deadline:
        pid = ledger.child_pid
        if pid is not None and pid not in killed:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            if not rewound.is_set():
                time.sleep(0.05)  # gone: it writes no acknowledgement now
                if rewind:
                    write_ack(ledger.prefix, (1, 0))
                rewound.set()
        time.sleep(0.002)


def _rollup_requests(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT sum(requests) FROM usage_rollups WHERE kind = 'model'"
                              ).fetchone()[0])


def test_a_child_dying_at_every_start_hands_the_journal_to_the_worker_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.db"
    ledger = journal(path)
    ledger.start()
    try:
        for n in range(1000):
            ledger.add(finished(n))
        assert ledger.flush()  # written by the child, and acknowledged
        stop, rewound = threading.Event(), threading.Event()
        killer = threading.Thread(target=_kill_every_child, args=(ledger, stop, rewound))
        killer.start()
        try:
            until(rewound.is_set, 10, "the child was never killed")
            for n in range(1000, 2500):  # while its children die
                ledger.add(finished(n))
                if n % 100 == 0:
                    time.sleep(0.01)
            # (its children still killed as they start: only the worker can write them)
            until(lambda: len(stored(path)) == 2500, 60, "never written")
            for n in range(2500, 3000):
                ledger.add(finished(n))
            assert ledger.flush(30)
            assert ledger.in_process
        finally:
            stop.set()
            killer.join()
        assert stored(path) == sorted(f"req-{n}" for n in range(3000))
        assert _rollup_requests(path) == 3000  # the 1,000 written twice, counted once
        assert writers_of(ledger.prefix) == 0
        assert ledger.restarts >= 2 and ledger.fallbacks == 1
        metrics = PrometheusMetrics(lambda: (), time.monotonic)
        metrics.ledger.watch(ledger)
        text = metrics.render()[0].decode()
        assert f"azure_openai_proxy_ledger_child_restarts_total {ledger.restarts}.0" in text
        assert "azure_openai_proxy_ledger_child_fallbacks_total 1.0" in text
        assert "azure_openai_proxy_ledger_writer_in_process 1.0" in text
    finally:
        ledger.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(3000))
    assert _rollup_requests(path) == 3000
    assert journal_files(path) == []  # (taken over: kept until the stop, then written)


def test_the_worker_taking_over_prices_with_the_prices_in_force_at_the_acknowledgement(
    tmp_path: Path,
) -> None:
    """A reload's prices, journalled before the acknowledged offset, price the records
    after it (read again from the segment's head, as a restarted child does)."""
    ledger = journal(tmp_path / "gw.db")
    ledger.start()
    try:
        ledger.reconfigure(PriceTable({"gpt-4o": Price(input=1000.0, output=1000.0)}), {})
        ledger.add(finished(1))
        assert ledger.flush()
        stop, killed = threading.Event(), threading.Event()
        killer = threading.Thread(target=_kill_every_child,
                                  args=(ledger, stop, killed, False))
        killer.start()
        try:
            until(killed.is_set, 10, "the child was never killed")
            ledger.add(finished(2))
            until(lambda: len(stored(ledger.database)) == 2, 60, "never written")
            ledger.add(finished(3))
            assert ledger.flush(30)
        finally:
            stop.set()
            killer.join()
        store = LedgerStore.open(ledger.database)
        try:
            costs = {r.request_id: r.cost_usd for r in store.records()}
        finally:
            store.close()
        assert costs == pytest.approx({f"req-{n}": 1100 * 1000.0 / 1e6 for n in (1, 2, 3)})
    finally:
        ledger.close()


def test_a_stop_writes_a_small_journal_itself_without_waiting_for_the_child(
    tmp_path: Path,
) -> None:
    """Under `_HAND_OVER_MOST` bytes left, the stop kills the child (perhaps still
    starting) and the worker's thread writes the rest: every record once."""
    path = tmp_path / "gw.db"
    ledger = journal(path)
    ledger.start()
    for n in range(1000):
        ledger.add(finished(n))
    assert ledger.flush()
    for n in range(1000, 1700):  # (appended at the stop, not yet written)
        ledger.add(finished(n))
    prefix = ledger.prefix
    ledger.close()
    assert ledger.in_process and ledger.fallbacks == 0 and ledger.failures == 0
    assert writers_of(prefix) == 0 and journal_files(path) == []
    assert stored(path) == sorted(f"req-{n}" for n in range(1700))
    assert _rollup_requests(path) == 1700


def test_a_stop_leaves_a_large_journal_to_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure_openai_proxy.gateway import ledgerjournal

    monkeypatch.setattr(ledgerjournal, "_HAND_OVER_MOST", 0)
    path = tmp_path / "gw.db"
    ledger = journal(path)
    ledger.start()
    for n in range(700):
        ledger.add(finished(n))
    ledger.close()
    assert not ledger.in_process
    assert stored(path) == sorted(f"req-{n}" for n in range(700))
    assert journal_files(path) == []  # written and removed by the child


def test_a_child_that_can_no_longer_be_started_hands_the_journal_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """The interpreter gone after the start (an upgrade, a removed virtualenv): the child
    killed, then every start refused; those count as deaths too."""
    import sys

    path = tmp_path / "gw.db"
    ledger = journal(path)
    ledger.start()
    try:
        ledger.add(finished(0))
        assert ledger.flush()
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
        child = ledger.child_pid
        assert child is not None
        os.kill(child, signal.SIGKILL)
        for n in range(1, 500):
            ledger.add(finished(n))
        until(lambda: len(stored(path)) == 500, 60, "never written")
        assert ledger.in_process and ledger.fallbacks == 1
        assert "could not be started" in caplog.text
    finally:
        ledger.close()
    assert stored(path) == sorted(f"req-{n}" for n in range(500))
    assert journal_files(path) == []
