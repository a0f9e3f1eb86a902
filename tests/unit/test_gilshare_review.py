"""Review rev2 of e67b270/28f7dcc (gateway/gilshare.py): the switch interval when someone
else sets it while a writer holds it, and a hold that outlives its writer's thread. Each
test here FAILS on main at 00dfc5c (the findings); each releases what it holds, so a
failure leaves no hold behind for the next test in the worker."""

from __future__ import annotations

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


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    assert gilshare._holders == 0, "a hold leaked from an earlier test"
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


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
