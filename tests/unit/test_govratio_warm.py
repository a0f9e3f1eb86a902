"""`bench.inprocess --warm N`: N requests served, on connections of their own, before the
counted ones (a test of the tool: it waits for every answer and for the ledger's flush,
so a warm phase left unanswered would hang here, and one not sent would leave the
ledger N records short)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from azure_openai_proxy.runtime.runner import run_loop
from bench.inprocess import _governed_key, _request, measure


def test_the_warm_phase_is_answered_and_written_before_the_count() -> None:
    split: list[float] = []
    with tempfile.TemporaryDirectory() as directory:
        database = Path(directory) / "gateway.db"
        key = _governed_key(directory)

        async def run() -> None:
            await measure(120, 4, False, False, f"sqlite:///{database}", _request(key),
                          split, warm=80)

        run_loop(run())
        connection = sqlite3.connect(database)
        try:
            statuses = connection.execute(
                "SELECT status, count(*) FROM usage_records GROUP BY status").fetchall()
        finally:
            connection.close()
    # every warm and counted request recorded as served (the counted phase's last few,
    # in flight when the count ended, are answered and written by the app's cleanup)
    assert dict(statuses)[200] >= 80 + 120
    assert set(dict(statuses)) <= {200, 499}
    assert len(split) == 3 and split[0] > 0
