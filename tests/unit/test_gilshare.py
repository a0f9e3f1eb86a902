"""The ledger writer's turns of the GIL (gateway/gilshare.py): the switch interval while it
runs, and a writer that keeps up with a loop that never lets the GIL go by itself."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.gateway import gilshare
from azure_openai_proxy.gateway.gilshare import SHARED_INTERVAL, GilShare
from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import PriceTable
from bench.inprocess import _governed_key, _request, measure


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    assert gilshare._PROCESS.count == 0, "a hold leaked from an earlier test"
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_the_interval_is_shared_until_the_last_holder_releases() -> None:
    a, b = GilShare(), GilShare()
    try:
        a.hold()
        a.hold()  # once per share
        assert sys.getswitchinterval() == pytest.approx(SHARED_INTERVAL) and a.held
        b.hold()
        a.release()
        assert sys.getswitchinterval() == pytest.approx(SHARED_INTERVAL)  # b still holds
        a.release()  # once per share: b is not released by a second call
        assert sys.getswitchinterval() == pytest.approx(SHARED_INTERVAL)
        b.release()
        assert sys.getswitchinterval() == pytest.approx(0.005) and not b.held
    finally:
        a.release()
        b.release()


def test_a_shorter_interval_set_by_the_operator_is_kept() -> None:
    sys.setswitchinterval(0.0001)
    share = GilShare()
    share.hold()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.02)
    finally:
        share.release()
    assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.02)


def _writer(path: Path) -> LedgerWriter:
    return LedgerWriter(path, PriceTable.shipped(), {("https://e/", "dep"): "gpt-4o-mini"},
                        BudgetGuard())


def test_a_running_writer_holds_the_shorter_interval(tmp_path: Path) -> None:
    ledger = _writer(tmp_path / "gw.db")
    ledger.start()
    try:
        assert sys.getswitchinterval() == pytest.approx(SHARED_INTERVAL)
    finally:
        ledger.close()
    assert sys.getswitchinterval() == pytest.approx(0.005)


@pytest.mark.slow
# 15 s in a full run at a load average of 7; 51 s in the slow step beside the benchmark
# smoke runs at a load of 14, near the suite's 60 s: the timeout bounds a hang only.
@pytest.mark.timeout(240)
def test_the_writer_keeps_up_with_a_saturated_gateway(tmp_path: Path) -> None:
    """The whole gateway in process (bench/inprocess.py: no sockets, so its event loop
    never waits) serving a governed key's requests as fast as it can: without the
    shorter interval the writer got so few turns of the GIL that its queue grew to
    51,000-92,000 records over 200,000 requests (past 100,000 the loop spools half);
    with it, within a batch or two. On a loaded machine (the CI's two cores beside
    another test process) main's writer got more turns (7,000-10,600 queued at the
    most in the review's runs, some under the bound): the strict guard of the hold is
    `test_a_running_writer_holds_the_shorter_interval`."""
    request = _request(_governed_key(str(tmp_path)))
    split: list[float] = []
    asyncio.run(measure(60_000, 32, False, False, f"sqlite:///{tmp_path}/gateway.db",
                        request, split, warm=2_000))
    most = split[2]
    assert most < 6_000, f"{most:,.0f} records waiting at the most"


# Session 22's review of the hold (each failed before its fix).


def test_a_second_writer_lowers_an_interval_raised_while_the_first_holds() -> None:
    """Anything that sets the interval while a writer holds it (a library, a test's
    fixture, an operator's hook) is not undone by the next hold: only the first holder
    lowers it, so a second writer then runs at 5 ms, starved as before the fix."""
    first, second = GilShare(), GilShare()
    first.hold()
    try:
        sys.setswitchinterval(0.005)
        second.hold()
        assert sys.getswitchinterval() <= SHARED_INTERVAL * 1.02
    finally:
        second.release()
        first.release()


def test_an_interval_set_while_a_writer_runs_is_not_overwritten_at_its_close() -> None:
    """The last release restores the interval saved at the first hold, whatever was set
    in between: an operator's 2 ms set after start-up is silently replaced by 5 ms."""
    share = GilShare()
    share.hold()
    try:
        sys.setswitchinterval(0.002)
    finally:
        share.release()
    assert sys.getswitchinterval() == pytest.approx(0.002)


def test_no_hold_outlives_the_writer_thread(tmp_path: Path) -> None:
    """The hold pairs with start()/close(), not with the thread: a writer started again
    after close() runs no thread (it is stopping) yet keeps the process at 0.5 ms."""
    ledger = LedgerWriter(tmp_path / "gw.db", PriceTable.shipped(),
                          {("https://e/", "dep"): "gpt-4o-mini"}, BudgetGuard())
    ledger.start()
    ledger.close()
    ledger.start()
    try:
        deadline = time.monotonic() + 5
        while ledger._thread is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ledger._thread is None  # no writer runs
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        ledger.close()
