"""PrometheusMetrics over plain records; the no-op stand-in."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from azure_openai_proxy.balancing import BreakerRules, PoolState
from azure_openai_proxy.observability import metrics as metrics_module
from azure_openai_proxy.observability.accesslog import RequestRecord
from azure_openai_proxy.observability.metrics import NoMetrics, PrometheusMetrics, metrics_for
from azure_openai_proxy.settings import DeploymentSettings

DEP = DeploymentSettings(model_name="gpt-4o", deployment_name="east-4o",
                         endpoint="https://east.example.com/prefix", api_key="k")


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def record(status: int = 200, model: str = "gpt-4o", usage: dict[str, int] | None = None) -> RequestRecord:
    return RequestRecord("id", "POST", route="chat/completions", model=model, deployment="east-4o",
                         endpoint=DEP.endpoint, status=status, upstream_ms=120.0, total_ms=300.0,
                         usage=usage)


def test_a_request_is_counted_with_its_labels_latency_and_tokens() -> None:
    pool = PoolState.for_deployments([DEP], BreakerRules())
    pool.of(DEP).cool_down(0.0, 10.0)
    metrics = PrometheusMetrics(lambda: pool, lambda: 4.0)
    metrics.request_started()
    metrics.request_finished(record(usage={"prompt_tokens": 11, "completion_tokens": 7}))
    metrics.request_started()
    metrics.request_finished(record(429))
    metrics.retried("429", failover=True)
    metrics.retried("timeout", failover=False)
    got = samples(metrics)
    labels = (("deployment", "east-4o"), ("endpoint", "east.example.com"), ("model", "gpt-4o"),
              ("route", "chat/completions"))
    assert got[("azure_openai_proxy_requests_total", (*labels, ("status", "200")))] == 1
    assert got[("azure_openai_proxy_requests_total", (*labels, ("status", "429")))] == 1
    tokens = {"deployment": "east-4o", "endpoint": "east.example.com", "model": "gpt-4o"}
    assert got[key("azure_openai_proxy_tokens_total", direction="in", **tokens)] == 11
    assert got[key("azure_openai_proxy_tokens_total", direction="out", **tokens)] == 7
    assert got[("azure_openai_proxy_in_flight_requests", ())] == 0
    assert got[("azure_openai_proxy_retries_total", (("reason", "timeout"),))] == 1
    assert ("azure_openai_proxy_failovers_total", (("reason", "timeout"),)) not in got
    assert got[("azure_openai_proxy_failovers_total", (("reason", "429"),))] == 1
    where = (("deployment", "east-4o"), ("endpoint", "east.example.com"))
    assert got[("azure_openai_proxy_deployment_cooldown_seconds", where)] == 6.0
    assert got[("azure_openai_proxy_upstream_ttfb_seconds_sum", where)] == 0.24


def test_client_chosen_model_names_cannot_grow_the_registry_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_MAX_LABEL_SETS", 20)
    metrics = PrometheusMetrics(lambda: [], lambda: 0.0)
    for i in range(50):
        metrics.request_finished(record(model=f"m{i}"))
    models = {labels for (name, labels) in samples(metrics) if name == "azure_openai_proxy_requests_total"}
    assert len(models) == 21
    assert any(("model", "_other") in labels for labels in models)


def test_two_apps_do_not_share_counters() -> None:
    first, second = PrometheusMetrics(lambda: [], lambda: 0.0), PrometheusMetrics(lambda: [], lambda: 0.0)
    first.request_finished(record())
    assert not any(name == "azure_openai_proxy_requests_total" for name, _ in samples(second))


def test_metrics_off_is_a_no_op() -> None:
    metrics = metrics_for(False, lambda: [], lambda: 0.0)
    assert isinstance(metrics, NoMetrics)
    metrics.request_finished(record())
    assert metrics.render()[0] == b""


def test_duration_buckets_are_cumulative_and_inclusive() -> None:
    metrics = PrometheusMetrics(lambda: [], lambda: 0.0)
    for total_ms in (50.0, 51.0, 1_000_000.0):  # on the first bound, just past it, past all
        metrics.request_started()
        metrics.request_finished(RequestRecord("id", "POST", route="chat/completions",
                                                model="gpt-4o", status=200, total_ms=total_ms))
    got = samples(metrics)
    bucket = "azure_openai_proxy_request_duration_seconds_bucket"
    where = {"route": "chat/completions", "model": "gpt-4o"}
    assert got[key(bucket, le="0.05", **where)] == 1
    assert got[key(bucket, le="0.1", **where)] == 2
    assert got[key(bucket, le="300.0", **where)] == 2
    assert got[key(bucket, le="+Inf", **where)] == 3
    assert got[key("azure_openai_proxy_request_duration_seconds_count", **where)] == 3
    assert got[key("azure_openai_proxy_request_duration_seconds_sum", **where)] == pytest.approx(1000.101)
    assert got[("azure_openai_proxy_in_flight_requests", ())] == 0


def test_requests_are_counted_across_batches_and_in_flight_at_once() -> None:
    metrics = PrometheusMetrics(lambda: [], lambda: 0.0)
    for _ in range(150):  # more than two batches, and a partial one left pending
        metrics.request_started()
    for _ in range(150):
        metrics.request_finished(record())
    assert metrics._series.in_flight == 0  # not deferred
    got = samples(metrics)
    labels = (("deployment", "east-4o"), ("endpoint", "east.example.com"), ("model", "gpt-4o"),
              ("route", "chat/completions"), ("status", "200"))
    assert got[("azure_openai_proxy_requests_total", labels)] == 150
