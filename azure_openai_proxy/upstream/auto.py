"""`upstream.http2: auto` (the default): HTTP/2 where TLS's ALPN picks it, HTTP/1.1 where
the origin is http://.

Azure is always https and offers h2, as Go's net/http (the Go tool's client) finds by
ALPN: an https origin goes to `H2Transport`, which asks for "h2" and serves an origin
that does not choose it over HTTP/1.1 from then on. An http:// origin (an emulator, a
sidecar, the tests) says nothing about HTTP/2, and sending it h2c's preface on a guess
would break every HTTP/1.1 server: it goes to `FastTransport`, as before `auto`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamResponse

__all__ = ["AutoTransport"]


class AutoTransport:
    """A `Transport` that sends each request by its URL's scheme: https to `h2`, http to
    `http1`. Both are built at once; neither connects before its first request."""

    def __init__(self, settings: UpstreamSettings, *, h2: H2Transport | None = None,
                 http1: FastTransport | None = None) -> None:
        self.h2 = h2 or H2Transport(settings)
        self.http1 = http1 or FastTransport(settings)

    def send(self, request: UpstreamRequest) -> Coroutine[Any, Any, UpstreamResponse]:
        # Not `async def`: the chosen transport's coroutine is handed on as it is, with no
        # frame of ours around it on every request. Endpoints are checked to start with
        # http:// or https:// (settings.check_endpoint), in lower case as written.
        if request.url.startswith("https:"):
            return self.h2.send(request)
        return self.http1.send(request)

    def connections_in_use(self) -> int:
        return self.h2.connections_in_use() + self.http1.connections_in_use()

    async def close(self) -> None:
        await self.h2.close()
        await self.http1.close()
