"""The usage ledger writer's health for `GET /metrics`, read from the writer when
scraped (nothing counted on the request path):

    ledger_database_failures_total   counter, the database refusing a batch (the
                                     writer's or its journal child's)
    ledger_child_restarts_total      counter, the journal child started again after it died
    ledger_child_fallbacks_total     counter, the journal child given up: at the start
                                     (it could not be made) or after a crash loop
    ledger_writer_in_process         gauge, 1 when the worker's own thread prices and
                                     writes (`ledger_writer: thread`, or a fallback), 0
                                     when the journal child does
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["LedgerHealth", "LedgerSeries"]

_PREFIX = "azure_openai_proxy_ledger_"


class LedgerHealth(Protocol):
    """What the series read of a writer (a journal writer has `restarts`, `fallbacks`
    and `in_process` too; a thread writer reads as 0, 0 and in process)."""

    failures: int


class LedgerSeries:
    """Collected from the writer `watch` was given (none: no series)."""

    def __init__(self) -> None:
        self._writer: LedgerHealth | None = None

    def watch(self, writer: LedgerHealth) -> None:
        self._writer = writer

    def collect(self) -> Iterator[Metric]:
        writer = self._writer
        if writer is None:
            return
        for name, doc, value in (
            ("database_failures", "Batches the ledger's database refused.", writer.failures),
            ("child_restarts", "Journal writer processes started again after dying.",
             getattr(writer, "restarts", 0)),
            ("child_fallbacks", "Journal writers given up for the worker's own thread.",
             getattr(writer, "fallbacks", 0)),
        ):
            counter = CounterMetricFamily(_PREFIX + name, doc)
            counter.add_metric([], value)
            yield counter
        gauge = GaugeMetricFamily(_PREFIX + "writer_in_process",
                                  "1: the worker's thread writes the ledger; 0: a child.")
        gauge.add_metric([], 1.0 if getattr(writer, "in_process", True) else 0.0)
        yield gauge

    def describe(self) -> Iterable[Metric]:
        return ()
