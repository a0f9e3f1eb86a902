"""tests/e2e/test_ledger.py's tests, unchanged, against the journal-fed child writer
(`ledger_writer: journal`): the gateways they start in process get the setting from
the `ledger_gateway` fixture below, those started as processes (SIGTERM under load)
from its environment variable.

The locked-database test reads the thread writer's spool file: its variant below holds
the journal writer to the same guarantee (the writer hits the lock, counted in
`failures`; every record kept outside the database meanwhile, in the journal; none lost
and no client failing). Not run here: the admin API's 503 test starts no ledger gateway
of the fixture's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.gateway.journalfiles import read_ack, segment_path, segments
from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter
from tests.e2e import test_ledger as suite
from tests.e2e.conftest import Emulator, gateway_settings

# (collected here from this module's namespace, with this module's fixtures)
from tests.e2e.test_ledger import (  # noqa: F401
    long_emulator,
    slow_emulator,
    test_a_budget_admits_one_of_many_concurrent_requests,
    test_a_budget_stops_quick_sequential_requests_before_the_ledger_writes_them,
    test_a_completed_stream_is_recorded_with_azures_usage,
    test_a_non_streamed_call_costs_what_the_price_table_says,
    test_a_reload_flushes_the_ledger_and_prices_later_records_with_the_new_prices,
    test_a_spent_budget_stops_the_key_without_an_sdk_retry,
    test_a_stream_the_client_abandons_is_recorded_with_a_flagged_estimate,
    test_a_team_budget_stops_every_key_of_the_team,
    test_admin_usage_groups_the_ledger_as_json_and_csv,
    test_sigterm_under_load_loses_no_record,
    test_the_usage_command_reads_the_ledger,
)
from tests.support import ServerThread
from tests.waiting import until

# The slow step (`.ci/run`'s `pytest --slow`): the opt-in journal writer's end-to-end
# tests start real child processes and wait on them (~1 min of the default run's wall
# time at two processes, session 29).
pytestmark = [pytest.mark.usefixtures("journal_environment"), pytest.mark.slow]


@pytest.fixture
def journal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_PROXY_LEDGER_WRITER", "journal")


@pytest.fixture
def ledger_gateway(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(emulator: Emulator, **extra: Any) -> ServerThread:
        settings = gateway_settings(emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}",
                                    ledger_writer="journal", **extra)
        server = suite._start(settings)
        assert type(suite._app(server).ledger).__name__ == "JournalLedgerWriter"
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _journalled(ledger: JournalLedgerWriter) -> int:
    """Record lines in the journal's segments on disk (written or not)."""
    return sum(line.startswith(b"[") for number in segments(ledger.prefix)
               for line in segment_path(ledger.prefix, number).read_bytes().split(b"\n"))


def test_a_locked_database_loses_no_record_and_fails_no_request(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
) -> None:
    """test_ledger.py's, the spool file read as the journal (its own: the records the
    child could not write)."""
    gateway = ledger_gateway(emulator)
    ledger = suite._app(gateway).ledger
    assert isinstance(ledger, JournalLedgerWriter)
    ledger.flush()
    lock = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every writer is refused until the commit
    try:
        answered = suite._load(gateway, 120)  # raises on any client error
        until(lambda: ledger.failures > 0, 20, "the writer never hit the lock")
        assert not ledger.flush(0.2)  # appended, and not in the database
        assert _journalled(ledger) == answered
    finally:
        lock.execute("COMMIT")
        lock.close()
    answered += suite._load(gateway, 40)
    until(lambda: len(suite.records(gateway)) == answered, 20,
          "records missing after the database came back")
    assert len({r.request_id for r in suite.records(gateway)}) == answered == 160
    last = segments(ledger.prefix)[-1]
    assert read_ack(ledger.prefix) == (last, segment_path(ledger.prefix, last).stat().st_size)
