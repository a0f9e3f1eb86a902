"""A Realtime session of a budgeted key on a model without a price: each response would
be recorded as $0 (unpriced), so the budget would never stop the session. Refused before
the upgrade, as on the HTTP routes (tests/e2e/test_unpriced_budget.py); a key without a
budget is served."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.gateway.app import create_app
from tests.e2e.conftest import AZURE_KEY, Emulator, emulator_config, gateway_settings
from tests.e2e.test_realtime import realtime_entries, refusal, virtual_key, ws_url
from tests.support import ServerThread, serve


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The bundled emulator with one more realtime deployment, a name no price matches."""
    config = emulator_config()
    custom = EmulatedDeployment("team-rt", "team-rt-2025-01-01", "realtime")
    config = dataclasses.replace(config, deployments=(*config.deployments, custom))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


def test_a_budgeted_key_is_refused_a_realtime_model_without_a_price(
        tmp_path: Path, emulator: Emulator) -> None:
    database = tmp_path / "gw.db"
    deployments = [{"model_name": "team-rt", "deployment_name": "team-rt",
                    "endpoint": emulator.url, "api_key": AZURE_KEY, "api": "v1"}]
    server = ServerThread(lambda: create_app(gateway_settings(
        emulator.url, database=f"sqlite:///{database}", deployment_config=deployments))).start()
    try:
        _, budgeted = virtual_key(server, database, budget_usd=0.5, budget_period="daily")
        status, body = refusal(server, "/v1/realtime?model=team-rt",
                               {"Authorization": f"Bearer {budgeted}"})
        assert status == 403 and body["error"]["code"] == "model_not_priced"
        assert realtime_entries(emulator) == []  # Azure never saw it
        _, free = virtual_key(server, database)  # no budget: served
        with connect(ws_url(server, "/v1/realtime?model=team-rt"),
                     additional_headers={"Authorization": f"Bearer {free}"}) as connection:
            assert '"session.created"' in str(connection.recv(timeout=10))
    finally:
        server.stop()
