"""Sending a request upstream, with failover: the pool's deployments are tried in the
balancer's order (`gateway/balancer.py`) until one answers, each attempt translated for
its deployment (`gateway/translation.py`), and the answer relayed (`gateway/relay.py`).

Failover happens only before the first byte reaches the client, and a request that may
have reached Azure is sent again only when the resend rule (`balancing/resend.py`) allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.balancing.passover import may_pass_over
from azure_openai_proxy.balancing.resend import may_try_elsewhere
from azure_openai_proxy.errors import (
    UnsupportedParameter,
    UpstreamAnswerTooLarge,
    UpstreamError,
    UpstreamPoolTimeout,
    UpstreamTimeout,
)
from azure_openai_proxy.gateway.affinity import Home, ResourceAffinity
from azure_openai_proxy.gateway.balancer import Balancer, Failover
from azure_openai_proxy.gateway.ownedanswers import run_thread_id
from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody, cost_of
from azure_openai_proxy.gateway.streammeter import made_run, run_created
from azure_openai_proxy.gateway.translation import RequestTranslator
from azure_openai_proxy.http.busypoll import BusyPoll
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.normalize.upstream_errors import is_retryable, translate_upstream_error
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, Target
from azure_openai_proxy.settings import DeploymentSettings, Settings
from azure_openai_proxy.upstream.entra import EntraTokens
from azure_openai_proxy.upstream.transport import Transport, UpstreamResponse

__all__ = ["UpstreamAttempts"]

_ERROR_BODY_LIMIT = 1024 * 1024


class UpstreamAttempts:
    """One worker's attempt loop: its transport, balancer, Entra tokens and translator."""

    def __init__(
        self, settings: Settings, transport: Transport, balancer: Balancer,
        tokens: EntraTokens | None, affinity: ResourceAffinity, busy: BusyPoll | None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.balancer = balancer
        self.tokens = tokens
        self.affinity = affinity
        self.translator = RequestTranslator(settings)
        self._busy = busy
        # Read once: a settings model's attributes cost a __getattr__ hook per access.
        self._answer_limit = settings.upstream.max_answer_bytes
        self._restore_model = settings.response_model == "client"
        self._keep_azure_fields = settings.keep_azure_fields

    async def send(
        self, request: HttpRequest, target: Target, caller: Caller, body: RequestBody,
        record: RequestRecord, routed: tuple[Pool, str | None],
    ) -> Reply:
        """Try the pool's deployments as the balancer orders them until one answers.

        Failover happens only before the first byte reaches the client: a 429, 5xx,
        connect error or timeout moves on to the next deployment (or waits for the
        first cooldown to end); once `relay` starts, a failure is the client's. A
        request that may have reached Azure is sent again only when the resend rule
        (`balancing/resend.py`) allows: a POST after a reset, a timeout or a 500 is not."""
        pool, client_model = routed
        record.model = client_model
        balancer = self.balancer
        started = balancer.clock()
        # A one-deployment pool that is up (nearly every request): its first attempt is
        # made without a failover run, which is made only when a second may be needed.
        first = balancer.sole_ready(pool, started, caller)
        run: Failover | None = None
        while True:
            if run is None and first is not None:
                deployment = first.settings
                lease = balancer.lease(first, record, started, caller)  # (noted in the record)
            else:
                if run is None:
                    # The estimated cost only orders deployments near their quota: one
                    # has no order.
                    run = balancer.failover(
                        pool, cost_of(body) if len(pool.deployments) > 1 else 0, started,
                        caller=caller)
                step = run.next_step(record)  # raises when no attempt is left
                if isinstance(step, float):
                    await asyncio.sleep(step)  # (noted in the record's retries)
                    continue
                deployment = step
                lease = run.begin(deployment, record)  # (noted in the record)
            try:
                token = None
                if deployment.auth == "entra" and self.tokens is not None:
                    token = await self.tokens.token_for(deployment)
                upstream_request, policy = self.translator.translate(
                    request, target, caller, body, deployment, client_model, record, token
                )
                sent = time.perf_counter()
                # Awaited here, not in a helper coroutine: every coroutine between the
                # task and the socket is resumed again when Azure's answer arrives.
                response = await self.transport.send(upstream_request)
                _note_answer(record, response, sent)
            except UpstreamPoolTimeout as exc:
                # Our own pool was full: no judgement on the deployment's health.
                lease.done()
                record.retries.append(f"{deployment.deployment_name}:{exc.code}")
                record.adaptations = ()
                run = run or balancer.failover(pool, 0, started, first, caller)
                run.failed(exc.with_traceback(None))
                continue
            except UnsupportedParameter as exc:
                # Not sent: the deployment cannot take the request (a parameter or a
                # route its API or api-version does not serve). Another member that is
                # not alike (another api-version, Azure OpenAI beside Foundry) may take
                # it; no judgement on this one's health. With none, the client's 400.
                lease.done()
                if not may_pass_over(pool.deployments, deployment,
                                     self.translator.client_version_sent(request, target)):
                    raise
                record.adaptations = ()  # what was fitted for it (the next is told its own)
                run = run or balancer.failover(pool, 0, started, first, caller)
                run.passed_over(record, deployment, exc.code, exc)
                continue
            except UpstreamError as exc:
                # A timeout after the request was sent may be its own doing (its size).
                lease.failed(str(exc.code), exc.request_sent and isinstance(exc, UpstreamTimeout))
                lease.done()
                if not may_try_elsewhere(request.method, None, exc.request_sent):
                    raise  # it may have reached Azure: the client gets this failure
                record.adaptations = ()
                run = run or balancer.failover(pool, 0, started, first, caller)
                run.moved_on(record, deployment, exc.code, exc)  # (without its traceback)
                continue
            except BaseException:
                lease.done()
                raise
            if self._busy is not None and not record.stream:
                # The client's next request often follows a JSON answer at once; not a
                # stream's, whose frames come at Azure's pace. (Busy polling off cost
                # 60-120 µs less CPU per stream at 1,000 streams, issue 15: this is one
                # of its two windows.)
                self._busy.poke()
            lease.answered(response.status, response.headers)
            if response.status >= 400:
                try:
                    error_body = await response.read(_ERROR_BODY_LIMIT)
                except UpstreamAnswerTooLarge:
                    error_body = b""  # no error message is a megabyte: keep the status only
                finally:
                    response.close()
                    lease.done()
                error = translate_upstream_error(
                    response.status, response.headers, error_body,
                    client_model=client_model, deployment=deployment.deployment_name,
                    client_credentials=deployment.auth == "passthrough",
                )
                if not is_retryable(response.status) or not may_try_elsewhere(
                    request.method, response.status, True
                ):
                    # Raised from a local that is cleared first: a frame that holds its
                    # own exception is a reference cycle (frame -> exception ->
                    # traceback -> frame) that keeps the request body alive.
                    try:
                        raise error
                    finally:
                        del error
                record.retries.append(f"{deployment.deployment_name}:{response.status}")
                # An error answer moved on from is not billed: the next attempt is judged
                # alone, sent and unanswered (estimated) or never sent (not).
                record.sent, record.body_sent, record.upstream_ms = 0, 0, None
                record.adaptations = ()  # the next attempt's body is fitted anew
                run = run or balancer.failover(pool, 0, started, first, caller)
                run.failed(error)
                del error
                continue
            try:
                restored = client_model if self._restore_model else None
                answer = await relay(request, target.operation, response, policy, restored,
                                     self._keep_azure_fields, record,
                                     want_id=target.kind == "resource",
                                     answer_limit=self._answer_limit,
                                     body=body, created=self.affinity.recorder(
                                         (deployment.endpoint, deployment.deployment_name)
                                     ) if target.operation == "responses" else (
                                         _run_created(self.affinity, target.operation, record,
                                                      deployment)
                                         if target.kind == "resource" else None))
                if record.created_id is not None:
                    home = (deployment.endpoint, deployment.deployment_name)
                    self.affinity.remember(record.created_id, home)
                    if target.operation == "threads/runs" and isinstance(answer, Answer):
                        _thread_made(self.affinity, answer, home)  # (streamed: the meter's)
                return answer
            finally:
                # Whatever happened (a client that left, a stalled upstream), the upstream
                # connection is released: closing twice is harmless in both transports.
                response.close()
                lease.done()


def _note_answer(record: RequestRecord, response: UpstreamResponse, sent: float) -> None:
    record.upstream_ms = (time.perf_counter() - sent) * 1000
    record.azure_request_id = response.headers.get("x-request-id") or response.headers.get(
        "apim-request-id"
    )


def _thread_made(affinity: ResourceAffinity, answer: Answer, home: Home) -> None:
    """The thread a `threads/runs` answered as JSON made (its run's `thread_id`) lives
    where the run was made: a request naming it goes there, whoever owns it."""
    made = run_thread_id(answer.body)
    if made is not None:
        affinity.remember(made, home)


def _run_created(affinity: ResourceAffinity, operation: str, record: RequestRecord,
                 deployment: DeploymentSettings) -> Callable[[str], None] | None:
    """`created` for a resource request's stream: a run's (`stream: true`), whose id is
    the record's and its home's (gateway/streammeter.py); None for others."""
    if not made_run(operation):
        return None
    return run_created(record, affinity.recorder(
        (deployment.endpoint, deployment.deployment_name)))
