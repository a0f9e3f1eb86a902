"""A budgeted key and a model without a price (independent review of issue 13): its cost
was recorded as $0 (unpriced), so a budget never stopped it; a key with a $0.0005 budget
spent without end on a fine-tune or any model missing from the price table. Refused now,
never silently free; served once the operator prices it, and to a key without a budget."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, MODELS, Emulator, emulator_config, gateway_settings
from tests.e2e.test_virtual_keys import Governed
from tests.support import ServerThread, serve

HELLO: Any = [{"role": "user", "content": "hello"}]


def _deployments(endpoint: str) -> list[dict[str, Any]]:
    return [{"model_name": model, "deployment_name": deployment, "endpoint": endpoint,
             "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
            for model, deployment in {**MODELS, "team-finetune": "team-ft"}.items()]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The bundled emulator with one more deployment, a name no price matches."""
    config = emulator_config()
    finetune = EmulatedDeployment("team-ft", "team-ft-2025-01-01", "chat")
    config = dataclasses.replace(config, deployments=(*config.deployments, finetune))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


@pytest.mark.parametrize("priced", [False, True])
def test_a_budgeted_key_is_refused_a_model_without_a_price(
        tmp_path: Path, emulator: Emulator, priced: bool) -> None:
    database = tmp_path / "gateway.db"
    prices = {"team-finetune": {"input": 1000.0, "output": 1000.0}} if priced else {}
    settings = gateway_settings(emulator.url, database=f"sqlite://{database}",
                                deployment_config=_deployments(emulator.url), prices=prices)
    server = ServerThread(lambda: create_app(settings)).start()
    store = KeyStore.open(database)
    try:
        governed = Governed(server, database, store)
        _, budgeted = governed.key("budgeted", limits=Limits(budget_usd=0.0005,
                                                             budget_period="daily"))
        _, free = governed.key("no-budget")
        client = governed.client(budgeted)
        served = len(emulator.requests())
        if priced:  # dear: the first call spends the budget, the next one is refused
            assert client.chat.completions.create(model="team-finetune", messages=HELLO)
            time.sleep(0.1)
            with pytest.raises(openai.RateLimitError) as spent:
                client.chat.completions.create(model="team-finetune", messages=HELLO)
            assert spent.value.code == "insufficient_quota"
            return
        for call in (lambda: client.chat.completions.create(model="team-finetune",
                                                            messages=HELLO),
                     lambda: client.responses.create(model="team-finetune", input="hi")):
            with pytest.raises(openai.PermissionDeniedError) as refused:
                call()
            assert refused.value.code == "model_not_priced"
        assert len(emulator.requests()) == served  # Azure never saw them
        # A priced model, and the same model for a key without a budget, are served.
        assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices
        assert governed.client(free).chat.completions.create(
            model="team-finetune", messages=HELLO).choices
    finally:
        store.close()
        server.stop()
