"""Work Azure bills outside any answer the gateway meters, and pools priced by their
first member (review of issue 13), through the gateway to the emulator with the official
`openai` SDK: a key with a budget was refused a new fine-tuning job but could resume a
paused one, and run a model grader; a model served by a pool of deployments was held at
its first deployment's price, and one of its deployments without a price was let through
to a hard budget."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.gateway.ownership import Owned
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import AZURE_KEY, MODELS, Emulator, emulator_config, gateway_settings
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)
from tests.support import ServerThread, serve

HELLO: Any = [{"role": "user", "content": "hello"}]
GRADER: Any = {"type": "score_model", "name": "g", "model": "gpt-4o",
               "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}]}


def _reached(emulator: Emulator, fragment: str) -> bool:
    return any(fragment in str(r.get("path", "")) for r in emulator.requests())


def _own(governed: Governed, key_id: str, *ids: str) -> None:  # noqa: F811
    owners = governed.server.app.gateway.owners

    async def made() -> None:  # as if the key had made them before it had a budget
        for object_id in ids:
            await owners.remember(object_id, Owned(key_id))

    governed.server.call(made)


def test_a_key_with_a_budget_may_not_resume_a_fine_tuning_job_or_run_a_grader(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    budget_id, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    _own(governed, budget_id, "ftjob-paused")
    client = governed.client(budgeted)
    for call in (lambda: client.fine_tuning.jobs.resume("ftjob-paused"),
                 lambda: client.fine_tuning.alpha.graders.run(grader=GRADER,
                                                              model_sample="yes")):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        assert refused.value.code == "not_metered"
    assert not _reached(emulator, "/resume") and not _reached(emulator, "graders")
    # stopping spending is no spending: a pause and a cancel go to Azure
    for call in (lambda: client.fine_tuning.jobs.pause("ftjob-paused"),
                 lambda: client.fine_tuning.jobs.cancel("ftjob-paused")):
        try:
            call()
        except openai.APIStatusError as exc:  # the emulator has no fine-tuning
            assert exc.code != "not_metered"
    assert _reached(emulator, "/pause") and _reached(emulator, "/cancel")


@pytest.mark.filterwarnings("ignore:The Evals API is deprecated")
def test_every_unmetered_refusal_has_one_code(
        governed: Governed, emulator: Emulator) -> None:  # noqa: F811
    budget_id, budgeted = governed.key("budget", limits=Limits(budget_usd=100.0))
    _own(governed, budget_id, "file-1")
    client = governed.client(budgeted)
    served = len(emulator.requests())
    for call in (lambda: client.batches.create(input_file_id="file-1",
                                               endpoint="/v1/chat/completions",
                                               completion_window="24h"),
                 lambda: client.fine_tuning.jobs.create(model="gpt-4o", training_file="file-1"),
                 lambda: client.responses.create(model="gpt-4o", input="hi", background=True)):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            call()
        assert refused.value.code == "not_metered"
    # evaluation runs are not routed at all: never sent
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.create("eval_1", data_source={"type": "jsonl", "source": {
            "type": "file_id", "id": "file-1"}})
    assert len(emulator.requests()) == served


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """The bundled emulator with one more deployment, a name no price matches."""
    config = emulator_config()
    finetune = EmulatedDeployment("team-ft", "team-ft-2025-01-01", "chat")
    config = dataclasses.replace(config, deployments=(*config.deployments, finetune))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


def _pooled(endpoint: str, *deployments: str) -> list[dict[str, Any]]:
    """The usual deployments, and `smart` served by `deployments` (first one first)."""
    usual = [{"model_name": model, "deployment_name": deployment, "endpoint": endpoint,
              "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
             for model, deployment in MODELS.items()]
    return usual + [{"model_name": "smart", "deployment_name": name, "endpoint": endpoint,
                     "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
                    for name in deployments]


def test_a_pool_with_an_unpriced_deployment_is_refused_to_a_hard_budget(
        tmp_path: Path, emulator: Emulator,
        start_gateway: Callable[[Settings], ServerThread]) -> None:
    database = tmp_path / "gateway.db"
    settings = gateway_settings(emulator.url, database=f"sqlite://{database}",
                                deployment_config=_pooled(emulator.url, "gpt-4o", "team-ft"))
    server = start_gateway(settings)
    store = KeyStore.open(database)
    try:
        governed = Governed(server, database, store)
        _, budgeted = governed.key("budgeted", limits=Limits(budget_usd=10.0))
        _, free = governed.key("no-budget")
        served = len(emulator.requests())
        for _ in range(4):  # whichever member the balancer would pick
            with pytest.raises(openai.PermissionDeniedError) as refused:
                governed.client(budgeted).chat.completions.create(model="smart",
                                                                  messages=HELLO)
            assert refused.value.code == "model_not_priced"
        assert len(emulator.requests()) == served  # Azure never saw them
        assert governed.client(free).chat.completions.create(model="smart",
                                                             messages=HELLO).choices
    finally:
        store.close()
