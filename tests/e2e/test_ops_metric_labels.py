"""A served gateway with a default endpoint beside its configured deployments: the names
clients send fill the cap on metric label sets, and the operator's own deployments keep
their labels after it (they were folded into `_other` with the clients' names)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.observability import metrics as metrics_module
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, MODELS, Emulator
from tests.e2e.test_metrics import P, scrape
from tests.support import ServerThread

CAP = 12
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def capped(emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
           monkeypatch: pytest.MonkeyPatch) -> str:
    """A served gateway's URL, its cap on client-chosen label sets CAP."""
    monkeypatch.setattr(metrics_module, "_MAX_LABEL_SETS", CAP)  # the gateway runs in-process
    return served(emulator, start_gateway)


def test_client_chosen_names_do_not_fold_the_configured_deployments_series(
        emulator: Emulator, capped: str) -> None:
    url = capped
    with client_of(url) as client:
        junk(client, 2 * CAP)
        for i in range(1, 2 * CAP):  # the fallback's spellings of gpt-4o: served by it
            answer = client.post("/v1/chat/completions",
                                 json={"model": "gpt" + ":" * i + "-4o", "messages": HELLO})
            assert answer.status_code == 200
        answer = client.post("/v1/chat/completions",
                             json={"model": "gpt-4o-mini", "messages": HELLO})
        assert answer.status_code == 200
    samples = scrape(url)
    requests = [s.labels for s in samples[P + "requests_total"]]
    host = emulator.url.partition("://")[2]
    assert {"route": "chat/completions", "model": "gpt-4o-mini", "deployment": "gpt-4o-mini",
            "endpoint": host, "status": "200"} in requests  # main: model and deployment _other
    assert {labels["deployment"] for labels in requests
            if labels["model"].startswith("gpt:")} <= {"gpt-4o"}
    tokens = [s.labels for s in samples[P + "tokens_total"]]
    assert {"model": "gpt-4o-mini", "deployment": "gpt-4o-mini", "endpoint": host,
            "direction": "out"} in tokens
    assert len(requests) <= CAP + 4  # the clients' names stay bounded


def served(emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> str:
    """A gateway's URL: the usual deployments, and unmapped names to the emulator."""
    settings = load_settings({
        "deployment_config": [
            {"model_name": model, "deployment_name": deployment, "endpoint": emulator.url,
             "api_key": AZURE_KEY} for model, deployment in MODELS.items()],
        "endpoint": emulator.url, "api_key": AZURE_KEY, "client_keys": [CLIENT_KEY]}, {})
    return start_gateway(settings).url


def client_of(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30,
                        headers={"Authorization": f"Bearer {CLIENT_KEY}"})


def junk(client: httpx.Client, count: int) -> None:
    """Names the emulator has no deployment of (its 404), each a new label set."""
    for i in range(count):
        answer = client.post("/v1/chat/completions",
                             json={"model": f"junk-{i}", "messages": HELLO})
        assert answer.status_code == 404
