"""tests/e2e/test_ledger.py's tests, unchanged, against the thread writer (`ledger_writer:
thread`; the default is the journal-fed child since session 30): the gateways they start
in process get the setting from the `ledger_gateway` fixture below, those started as
processes (SIGTERM under load) from its environment variable. (The locked-database test
is test_ledger.py's own, for both writers.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.gateway.ledger import LedgerWriter
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

# The slow step (`.ci/run`'s `pytest --slow`): the default suite runs these against the
# default writer (test_ledger.py).
pytestmark = [pytest.mark.usefixtures("thread_environment"), pytest.mark.slow]


@pytest.fixture
def thread_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_PROXY_LEDGER_WRITER", "thread")


@pytest.fixture
def ledger_gateway(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(emulator: Emulator, **extra: Any) -> ServerThread:
        settings = gateway_settings(emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}",
                                    ledger_writer="thread", **extra)
        server = suite._start(settings)
        assert type(suite._app(server).ledger) is LedgerWriter
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
