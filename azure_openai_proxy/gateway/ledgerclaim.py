"""Journals written by a worker's own thread rather than a journal child
(journalchild.py, whose reader and database this uses): the worker's own journal after a
take-over (ledgerjournal.py), and dead workers' journals claimed by a worker that runs
no child (the thread writer, `ledger_writer: thread`, or a journal writer that fell back
or took over: ledger.py `_claim_dead`). Read as the child reads them: from the
acknowledgement on, a bounded piece at a time (journalchild._READ), acknowledged after
each commit; while the database refuses, the journal keeps them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from azure_openai_proxy.gateway.journalchild import (
    DONE,
    PROGRESS,
    DatabaseRefused,
    JournalReader,
    Ledger,
    claim_dead_journals,
)

__all__ = ["ThreadLedger", "claim_dead_journals", "read_journal"]

log = logging.getLogger("azure_openai_proxy")


class ThreadLedger(Ledger):
    """The child's `Ledger` in a worker: a failure counted by `failed` (the writer's
    `failures`), never a byte on the standard output (the gateway's own)."""

    def __init__(self, database: Path, busy_ms: int, failed: Callable[[], None]) -> None:
        super().__init__(database, busy_ms)
        self._count = failed

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._count()
        if self.failures == 1 or self.failures % 100 == 0:
            log.warning("usage ledger: database unavailable (%s: %s); the records wait in "
                        "the journal until it is back", type(exc).__name__, exc)
        self.close()


def read_journal(reader: JournalReader, finished: bool) -> bool:
    """Write what `reader`'s journal has past its acknowledgement; True once it is all
    written and `finished` (its writer appends no more: the caller removes it). The
    database refusing: False, the rest left in the journal for the next call."""
    try:
        state = PROGRESS
        while state == PROGRESS or (finished and state != DONE):
            state = reader.step(finished)  # (finished: IDLE after a piece, DONE after all)
    except DatabaseRefused:
        return False
    return state == DONE
