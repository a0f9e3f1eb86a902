"""Review of journalleft (session 31): a thread writer claims dead journals from its own
thread only (gateway/ledger.py `_claim_dead`), never in the pass `start` or `close` makes
on the caller's thread: a dead journal of up to 1 GB would hold up a worker's start (the
event loop waits for it) or its stop. Seen surviving a mutation before: no test failed
with the guard removed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from azure_openai_proxy.gateway import ledger as ledger_module
from azure_openai_proxy.gateway.journalchild import Ledger
from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.gateway.ledgerclaim import claim_dead_journals
from tests.unit.test_journalleft_claims import _dead_journal
from tests.unit.test_ledger_writer import finished, stored, writer
from tests.waiting import until


def test_dead_journals_are_claimed_on_the_writers_thread_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "gw.db"
    _dead_journal(path, "1-dead0000", range(50))
    claimed_on: list[str] = []

    def claim(database: Path, own: str, ledger: Ledger) -> None:
        claimed_on.append(threading.current_thread().name)
        claim_dead_journals(database, own, ledger)

    monkeypatch.setattr(ledger_module, "claim_dead_journals", claim)
    ledger: LedgerWriter = writer(path)
    ledger.start()
    try:
        ledger.add(finished(50))
        until(lambda: len(stored(path)) == 51, 20, "the dead journal was never written")
        ledger._next_claim = 0.0  # (one due at the stop: not made there)
    finally:
        ledger.close()
    assert claimed_on and set(claimed_on) == {"ledger-writer"}, claimed_on
