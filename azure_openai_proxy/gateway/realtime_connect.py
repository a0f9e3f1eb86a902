"""A Realtime session's upstream: one deployment of its pool connected to Azure's
WebSocket, with failover as on HTTP routes (the balancer's order; Azure's retryable
refusals, 429 and 5xx, and connect failures move on to the next deployment; any other
refusal is the client's answer). The client's `openai-beta` and request id go with it,
and the server's key or Entra token, never the client's gateway key.
"""

from __future__ import annotations

import asyncio
import time

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import GatewayError, UpstreamError
from azure_openai_proxy.gateway.balancer import Lease
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.gateway.realtime_wire import (
    RealtimeTarget,
    forwarded_subprotocols,
    realtime_api_version,
    realtime_url,
)
from azure_openai_proxy.http.interface import HttpRequest
from azure_openai_proxy.normalize.upstream_errors import is_retryable, translate_upstream_error
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool
from azure_openai_proxy.translate import azure_auth_headers
from azure_openai_proxy.upstream.websocket import UpstreamRefused, UpstreamSocket, open_socket

__all__ = ["connect_upstream"]

_FORWARDED = ("openai-beta", "x-ms-client-request-id")


async def connect_upstream(gateway: Gateway, request: HttpRequest, target: RealtimeTarget,
                           caller: Caller, pool: Pool, model: str,
                           record: RequestRecord) -> tuple[UpstreamSocket, Lease]:
    """One deployment of the pool, connected: tried in the balancer's order, Azure's
    retryable refusals (429, 5xx) and connect failures moving on to the next."""
    run = gateway.balancer.failover(pool, 0, caller=caller)
    forwarded = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    subprotocols, beta = forwarded_subprotocols(request.headers)
    if beta is not None:
        forwarded["openai-beta"] = beta
    while True:
        step = run.next_step(record)  # raises when no attempt is left
        if isinstance(step, float):
            await asyncio.sleep(step)
            continue
        deployment = step
        lease = run.begin(deployment, record)
        try:
            token = None
            if deployment.auth == "entra" and gateway.tokens is not None:
                token = await gateway.tokens.token_for(deployment)
            headers = {**forwarded, **azure_auth_headers(deployment, caller, token)}
            version = realtime_api_version(deployment, target.client_version if target.native
                                           else None, gateway.settings.honour_client_api_version)
            sent = time.perf_counter()
            upstream = await open_socket(realtime_url(deployment, version), headers,
                                         gateway.settings.upstream, subprotocols)
        except UpstreamRefused as refused:
            lease.answered(refused.status, refused.headers)
            lease.done()
            error = translate_upstream_error(
                refused.status, refused.headers, refused.body, client_model=model,
                deployment=deployment.deployment_name,
                client_credentials=deployment.auth == "passthrough")
            if not is_retryable(refused.status):
                raise error from None
            run.moved_on(record, deployment, refused.status, error)
            del error
            continue
        except GatewayError as exc:
            lease.failed(str(exc.code))
            lease.done()
            if not isinstance(exc, UpstreamError):
                raise  # not Azure's doing (no key to send): the client's answer
            run.moved_on(record, deployment, exc.code, exc)
            continue
        except BaseException:
            lease.done()
            raise
        record.upstream_ms = (time.perf_counter() - sent) * 1000
        lease.answered(101, upstream.response_headers)
        record.azure_request_id = (upstream.response_headers.get("x-request-id")
                                   or upstream.response_headers.get("apim-request-id"))
        return upstream, lease
