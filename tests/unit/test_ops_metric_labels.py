"""Metric labels past the cap on client-chosen names: the configured deployments and the
names the configuration gives keep their own labels, whatever clients sent before.

With a default endpoint (or the '.'/':' fallback: `g.pt-4o` and `g:pt-4o` reach a
configured gpt-4o) every new name a client sends is a new label set, and past
`_MAX_LABEL_SETS` new ones are folded into `_other`. The cap was first come, first
served: 500 junk names sent after a start folded every later series of the operator's
own deployments (a first 429 of gpt-4o, a model first used in the afternoon) into
`_other`, so their dashboards and alerts went blind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from azure_openai_proxy.balancing import BreakerRules, PoolState
from azure_openai_proxy.observability import metrics as metrics_module
from azure_openai_proxy.observability.metrics import PrometheusMetrics
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import RoutingTable
from azure_openai_proxy.settings import DeploymentSettings, Settings

DEFAULT = "https://default.example.com"
DEP = DeploymentSettings(model_name="gpt-4o", deployment_name="east-4o",
                         endpoint="https://east.example.com/", api_key=SecretStr("k"))
ENDPOINT = DEP.endpoint  # as a record names it (the settings' spelling)
TABLE = RoutingTable(Settings(deployments=[DEP], default_endpoint=DEFAULT,
                              default_api_key=SecretStr("k")))
CAP = 20


@pytest.fixture(autouse=True)
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_MAX_LABEL_SETS", CAP)


def served() -> PrometheusMetrics:
    pool = PoolState.for_deployments([DEP], BreakerRules())
    return PrometheusMetrics(lambda: pool, lambda: 0.0, lambda: TABLE)


def finished(metrics: PrometheusMetrics, model: str | None, deployment: str | None,
             endpoint: str | None, status: int = 200) -> None:
    metrics.request_started()
    metrics.request_finished(RequestRecord(
        "id", "POST", route="chat/completions", model=model, deployment=deployment,
        endpoint=endpoint, status=status, upstream_ms=10.0, total_ms=20.0,
        usage={"prompt_tokens": 3, "completion_tokens": 2}))


def series(metrics: PrometheusMetrics, name: str) -> Iterator[dict[str, str]]:
    text = metrics.render()[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels


def junk(metrics: PrometheusMetrics, count: int = 3 * CAP) -> None:
    """Names a client chose, each a deployment of the default endpoint."""
    for i in range(count):
        finished(metrics, f"junk-{i}", f"junk-{i}", DEFAULT, 404)


def test_a_configured_deployment_keeps_its_labels_after_clients_filled_the_cap() -> None:
    metrics = served()
    junk(metrics)
    finished(metrics, "gpt-4o", "east-4o", ENDPOINT, 429)  # its first 429, after the junk
    finished(metrics, "east-4o", "east-4o", ENDPOINT)  # by its deployment's name
    requests = list(series(metrics, "azure_openai_proxy_requests_total"))
    mine = {"route": "chat/completions", "model": "gpt-4o", "deployment": "east-4o",
            "endpoint": "east.example.com"}
    assert {**mine, "status": "429"} in requests  # main: model and deployment "_other"
    assert {**mine, "model": "east-4o", "status": "200"} in requests
    tokens = list(series(metrics, "azure_openai_proxy_tokens_total"))
    for direction in ("in", "out"):
        assert {"model": "gpt-4o", "deployment": "east-4o", "endpoint": "east.example.com",
                "direction": direction} in tokens
    assert {"route": "chat/completions", "model": "gpt-4o"} in list(
        series(metrics, "azure_openai_proxy_request_duration_seconds_count"))
    assert {"deployment": "east-4o", "endpoint": "east.example.com"} in list(
        series(metrics, "azure_openai_proxy_upstream_ttfb_seconds_count"))
    # and the clients' names stay bounded
    assert len(requests) <= CAP + 3
    assert sum(labels["model"] == "_other" for labels in requests) == 1


def test_fallback_spellings_of_a_configured_model_are_bounded_on_its_own_deployment() -> None:
    """`g.pt-4o`, `g..pt-4o`... all reach east-4o: past the cap they are model
    `_other` there, and the deployment keeps its name."""
    metrics = served()
    for i in range(1, 3 * CAP):
        finished(metrics, "g" + "." * i + "pt-4o", "east-4o", ENDPOINT)
    requests = list(series(metrics, "azure_openai_proxy_requests_total"))
    assert len(requests) <= CAP + 1
    assert {labels["deployment"] for labels in requests} == {"east-4o"}
    assert {"route": "chat/completions", "model": "_other", "deployment": "east-4o",
            "endpoint": "east.example.com", "status": "200"} in requests


def test_a_configured_deployments_cooldowns_keep_their_labels() -> None:
    metrics = served()
    for i in range(3 * CAP):
        metrics.cooled_down(f"junk-{i}", DEFAULT)
        metrics.circuit_opened(f"junk-{i}", DEFAULT)
    metrics.cooled_down("east-4o", ENDPOINT)
    metrics.circuit_opened("east-4o", ENDPOINT)
    where = {"deployment": "east-4o", "endpoint": "east.example.com"}
    assert where in list(series(metrics, "azure_openai_proxy_cooldowns_total"))
    assert where in list(series(metrics, "azure_openai_proxy_circuit_opened_total"))
    assert len(list(series(metrics, "azure_openai_proxy_cooldowns_total"))) <= CAP + 2


def test_requests_without_a_model_are_never_folded() -> None:
    """A 401 names no model: its label set is the route and status alone, bounded."""
    metrics = served()
    junk(metrics)
    finished(metrics, None, None, None, 401)
    assert {"route": "chat/completions", "model": "", "deployment": "", "endpoint": "",
            "status": "401"} in list(series(metrics, "azure_openai_proxy_requests_total"))
