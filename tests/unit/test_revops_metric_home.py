"""The default endpoint's own deployment (`default`: where a request that names no model
goes, a file, a batch, a vector store) is the operator's: past the cap on the names
clients choose it keeps its labels. Junk names sent to the default endpoint filled the
cap, and then every files request was counted as model and deployment `_other` (its
model label was "" before: it names none), its cooldowns and circuits as `_other`."""

from __future__ import annotations

from azure_openai_proxy.observability.record import RequestRecord
from tests.unit.test_ops_metric_labels import (
    CAP,
    DEFAULT,
    TABLE,
    junk,
    series,
    served,
    small_cap,  # noqa: F401  (autouse: the cap made small)
)

HOME = TABLE.resolve_home().deployments[0]  # as a record names it


def test_a_request_to_the_default_endpoints_own_deployment_is_never_folded() -> None:
    assert (HOME.endpoint, HOME.deployment_name) == (DEFAULT, "default")
    metrics = served()
    junk(metrics)
    metrics.request_started()
    metrics.request_finished(RequestRecord(
        "id", "GET", route="files", model=None, deployment=HOME.deployment_name,
        endpoint=HOME.endpoint, status=200, upstream_ms=5.0, total_ms=6.0))
    requests = list(series(metrics, "azure_openai_proxy_requests_total"))
    assert {"route": "files", "model": "", "deployment": "default",
            "endpoint": "default.example.com", "status": "200"} in requests  # main: _other
    assert len(requests) <= CAP + 2  # the clients' names stay bounded


def test_its_cooldowns_and_circuits_keep_their_labels() -> None:
    metrics = served()
    for i in range(3 * CAP):
        metrics.cooled_down(f"junk-{i}", DEFAULT)
        metrics.circuit_opened(f"junk-{i}", DEFAULT)
    metrics.cooled_down(HOME.deployment_name, HOME.endpoint)
    metrics.circuit_opened(HOME.deployment_name, HOME.endpoint)
    where = {"deployment": "default", "endpoint": "default.example.com"}
    assert where in list(series(metrics, "azure_openai_proxy_cooldowns_total"))  # main: _other
    assert where in list(series(metrics, "azure_openai_proxy_circuit_opened_total"))


def test_a_client_naming_a_model_default_is_still_bounded() -> None:
    """`default` is the home's deployment name, not a configured model name: a client's
    names on it past the cap are model `_other` there."""
    metrics = served()
    junk(metrics)
    metrics.request_started()
    metrics.request_finished(RequestRecord(
        "id", "POST", route="chat/completions", model="default", deployment="default",
        endpoint=DEFAULT, status=404, total_ms=6.0))
    requests = list(series(metrics, "azure_openai_proxy_requests_total"))
    assert {"route": "chat/completions", "model": "_other", "deployment": "default",
            "endpoint": "default.example.com", "status": "404"} in requests
