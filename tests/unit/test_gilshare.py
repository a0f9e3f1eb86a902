"""The ledger writer's turns of the GIL (gateway/gilshare.py): the switch interval while it
runs, and a writer that keeps up with a loop that never lets the GIL go by itself."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.gilshare import SHARED_INTERVAL, GilShare
from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import PriceTable
from bench.inprocess import _governed_key, _request, measure


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_the_interval_is_shared_until_the_last_holder_releases() -> None:
    a, b = GilShare(), GilShare()
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


def test_a_shorter_interval_set_by_the_operator_is_kept() -> None:
    sys.setswitchinterval(0.0001)
    share = GilShare()
    share.hold()
    assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.02)
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


def test_the_writer_keeps_up_with_a_saturated_gateway(tmp_path: Path) -> None:
    """The whole gateway in process (bench/inprocess.py: no sockets, so its event loop
    never waits) serving a governed key's requests as fast as it can: without the
    shorter interval the writer got so few turns of the GIL that its queue grew to
    51,000-92,000 records over 200,000 requests (past 100,000 the loop spools half);
    with it, within a batch or two."""
    request = _request(_governed_key(str(tmp_path)))
    split: list[float] = []
    asyncio.run(measure(60_000, 32, False, False, f"sqlite:///{tmp_path}/gateway.db",
                        request, split, warm=2_000))
    most = split[2]
    assert most < 6_000, f"{most:,.0f} records waiting at the most"
