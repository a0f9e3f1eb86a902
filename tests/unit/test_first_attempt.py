"""The sole deployment's first attempt, made without a failover run (`Balancer.sole_ready`,
`lease`): a client that leaves while it waits for Azure releases it as a run's attempt is
released (in-flight count back, a half-open circuit's probe let go), and the record counts
it as one attempt."""

from __future__ import annotations

import asyncio

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.affinity import ResourceAffinity
from azure_openai_proxy.gateway.attempts import UpstreamAttempts
from azure_openai_proxy.gateway.balancer import Balancer
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import RoutingTable, classify
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamResponse
from tests.unit.test_governed_usual import _Request


class _Unanswered:
    """A transport whose Azure never answers: `sent` is set once a request is at it."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.sent.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    def connections_in_use(self) -> int:
        return 0

    async def close(self) -> None:
        return None


async def test_a_client_leaving_the_first_attempt_releases_its_lease_and_probe() -> None:
    settings = load_settings({"deployment_config": [{
        "model_name": "gpt-4o", "deployment_name": "east-4o",
        "endpoint": "https://east.example/", "api_key": "k", "api_version": "2024-10-21",
    }]}, {})
    now = [100.0]
    balancer = Balancer(settings, clock=lambda: now[0])
    state = balancer.state.of(settings.deployments[0])
    state.breaker.state, state.breaker.opened_until = "open", 50.0  # its probe is due
    transport = _Unanswered()
    attempts = UpstreamAttempts(settings, transport, balancer, None, ResourceAffinity(), None)
    table = RoutingTable(settings)
    record = RequestRecord("r", "POST")
    task = asyncio.ensure_future(attempts.send(
        _Request("client", b"{}"), classify("POST", "/v1/chat/completions", settings.api_base), Caller(None),
        RequestBody(json={"model": "gpt-4o", "messages": []}, raw=b"{}"), record,
        (table.resolve("gpt-4o"), "gpt-4o")))
    await asyncio.wait_for(transport.sent.wait(), 5.0)
    assert (state.in_flight, state.breaker.state, state.breaker.probing) == (1, "half-open", True)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (state.in_flight, state.breaker.probing) == (0, False)  # another probe may go
    assert state.available(now[0])
    assert (record.attempts, record.deployment, record.retries) == (1, "east-4o", [])
