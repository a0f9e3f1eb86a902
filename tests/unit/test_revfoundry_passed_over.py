"""`Failover.passed_over` (a pool member that cannot take the request, never sent to:
a Foundry deployment refusing `logprobs`) after another member's failure: the request's
record names the deployment whose error the client gets, for the access line, the
metrics' deployment label and the ledger, and counts the upstream attempts made."""

from __future__ import annotations

import random

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import UnsupportedParameter, UpstreamHttpError
from azure_openai_proxy.gateway.balancer import Balancer, Failover
from azure_openai_proxy.observability.metrics import NoMetrics
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import RoutingTable


def _run() -> tuple[Balancer, object]:
    settings = load_settings({"models": {"m": [
        {"deployment_name": "gpt-4o", "endpoint": "https://a.example.com", "api_key": "k",
         "priority": 1},
        {"deployment_name": "Llama-3-70B", "endpoint": "https://f.example.com",
         "api_key": "k", "api": "foundry", "priority": 2},
    ]}, "client_keys": ["c"]}, {})
    balancer = Balancer(settings, clock=lambda: 100.0, rng=random.Random(0))
    return balancer, RoutingTable(settings).resolve("m")


def _pass_the_foundry_member(run: Failover, record: RequestRecord) -> None:
    """The run's next member is the Foundry one, which refuses the request unsent."""
    foundry = run.next_step(record)
    assert not isinstance(foundry, float) and foundry.api == "foundry"
    run.begin(foundry, record).done()
    run.passed_over(record, foundry, "unsupported_parameter",
                    UnsupportedParameter("no logprobs here", param="logprobs"))


def test_the_record_names_the_member_whose_error_is_given() -> None:
    balancer, pool = _run()
    run = balancer.failover(pool, 10)  # type: ignore[arg-type]
    record = RequestRecord("id", "POST")
    azure = run.next_step(record)
    assert not isinstance(azure, float) and azure.deployment_name == "gpt-4o"
    lease = run.begin(azure, record)
    lease.answered(503, {})
    lease.done()
    run.moved_on(record, azure, 503, UpstreamHttpError(503, {"error": {"message": "busy"}}))
    _pass_the_foundry_member(run, record)
    with pytest.raises(UpstreamHttpError) as caught:
        run.next_step(record)
    assert caught.value.http_status == 503
    assert (record.deployment, record.endpoint) == ("gpt-4o", "https://a.example.com")
    assert record.attempts == 1
    assert record.retries == ["gpt-4o:503", "Llama-3-70B:unsupported_parameter"]


def test_a_refusal_before_any_failure_is_the_one_given() -> None:
    balancer, pool = _run()
    run = balancer.failover(pool, 10)  # type: ignore[arg-type]
    record = RequestRecord("id", "POST")
    balancer.state.of(pool.deployments[0]).cool_down(100.0, 3600)  # type: ignore[attr-defined]
    _pass_the_foundry_member(run, record)
    with pytest.raises(Exception) as caught:
        run.next_step(record)
    # the Azure OpenAI member, the one that could serve it, is rate-limited: a 429
    assert getattr(caught.value, "http_status", None) == 429
    assert (record.deployment, record.attempts) == ("Llama-3-70B", 0)


class _Retries(NoMetrics):
    def __init__(self) -> None:
        self.retried_for: list[tuple[str, bool]] = []

    def retried(self, reason: str, failover: bool) -> None:
        self.retried_for.append((reason, failover))


def test_a_member_passed_over_is_no_retry_in_the_metrics() -> None:
    # retries_total / failovers_total count attempts after an upstream failure (429,
    # 503, timeout): a refusal before Azure counted one with reason "400" on main.
    settings = load_settings({"models": {"m": [
        {"deployment_name": "Llama-3-70B", "endpoint": "https://f.example.com",
         "api_key": "k", "api": "foundry", "priority": 1},
        {"deployment_name": "gpt-4o", "endpoint": "https://a.example.com", "api_key": "k",
         "priority": 2},
    ]}, "client_keys": ["c"]}, {})
    metrics = _Retries()
    balancer = Balancer(settings, metrics=metrics, clock=lambda: 100.0, rng=random.Random(0))
    run = balancer.failover(RoutingTable(settings).resolve("m"), 10)  # type: ignore[arg-type]
    record = RequestRecord("id", "POST")
    _pass_the_foundry_member(run, record)
    azure = run.next_step(record)
    assert not isinstance(azure, float) and azure.deployment_name == "gpt-4o"
    assert metrics.retried_for == []
