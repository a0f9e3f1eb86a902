"""The ledger writer's series on `GET /metrics` (observability/ledgerseries.py): read from
the writer when scraped."""

from __future__ import annotations

import time
from pathlib import Path

from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.metrics import NoMetrics, PrometheusMetrics


def _lines(metrics: PrometheusMetrics) -> list[str]:
    return [line for line in metrics.render()[0].decode().splitlines()
            if line.startswith("azure_openai_proxy_ledger_")]


def test_no_writer_no_series() -> None:
    assert _lines(PrometheusMetrics(lambda: (), time.monotonic)) == []
    NoMetrics().ledger.watch(object())  # type: ignore[arg-type]  # (kept, never shown)


def test_a_thread_writers_failures_are_shown_and_it_writes_in_process(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "gw.db", PriceTable.shipped(), {}, BudgetGuard())
    metrics = PrometheusMetrics(lambda: (), time.monotonic)
    metrics.ledger.watch(writer)
    writer.failures = 3  # (as its thread counts a refused batch)
    assert _lines(metrics) == [
        "azure_openai_proxy_ledger_database_failures_total 3.0",
        "azure_openai_proxy_ledger_child_restarts_total 0.0",
        "azure_openai_proxy_ledger_child_fallbacks_total 0.0",
        "azure_openai_proxy_ledger_writer_in_process 1.0",
    ]
