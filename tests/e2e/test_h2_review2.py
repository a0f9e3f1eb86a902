"""`H2Transport` against servers as real networks and Azure present them (issue 15's
second review): each test a finding's reproduction, failing before its fix."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.h2raw import RawH2Server, frame, head_block


def _transport(**settings: Any) -> H2Transport:
    settings = {"read_timeout": 2.0, "connect_timeout": 2.0, "pool_timeout": 1.0, **settings}
    return H2Transport(UpstreamSettings(http2=True, **settings))


def _get(url: str) -> UpstreamRequest:
    return UpstreamRequest("GET", url, {}, None)


def _answer(sid: int) -> bytes:
    return frame(1, 4, sid, head_block((":status", "200"))) + frame(0, 1, sid, b"ok")


# -- a connection the network lost ------------------------------------------------------

@pytest.mark.parametrize("pings", [False, True])
async def test_a_dead_connection_is_dropped_and_a_live_slow_one_kept(pings: bool) -> None:
    """A connection from which nothing comes, not even a PING's answer (the network lost
    it), took every later request and timed each out after read_timeout, for ever. A
    PING unanswered for a check ends it: the next request gets a new connection. A
    server answering PINGs but slow on one stream keeps its connection."""
    def script(sid: int) -> bytes:
        # Lost: the first connection says nothing more. Slow: stream 1 only stalls.
        silent = server.connections == 1 if not pings else sid == 1
        return b"" if silent else _answer(sid)
    server = RawH2Server(script, pings=pings)
    url = await server.start()
    transport = _transport(read_timeout=0.4)
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(transport.send(_get(url + "/first")), 5)
    answer = await asyncio.wait_for(transport.send(_get(url + "/second")), 5)
    assert await answer.read(100) == b"ok"
    answer.close()
    assert server.connections == (1 if pings else 2)
    if not pings:
        assert server.frames(6)  # it was asked
    await transport.close()
    await server.stop()


# -- a graceful GOAWAY at pool_size connections ----------------------------------------

async def test_a_draining_connection_does_not_hold_the_pool_size() -> None:
    """pool_size 1, its connection told GOAWAY (a graceful restart) while one stream
    goes on: that connection counted against pool_size for as long as the stream lasted
    (minutes for a relayed one), every request meanwhile an UpstreamPoolTimeout."""
    def script(sid: int) -> bytes:
        if server.connections == 1:  # a stream that goes on, then GOAWAY above it
            return (frame(1, 4, sid, head_block((":status", "200"))) + frame(0, 0, sid, b"part")
                    + frame(7, 0, 0, struct.pack(">II", sid, 0)))
        return _answer(sid)
    server = RawH2Server(script)
    url = await server.start()
    transport = _transport(pool_size=1, pool_timeout=0.5)
    long = await transport.send(_get(url + "/stream"))
    await asyncio.sleep(0.05)  # the GOAWAY arrives
    answer = await asyncio.wait_for(transport.send(_get(url + "/next")), 5)
    assert await answer.read(100) == b"ok"
    assert server.connections == 2
    assert await anext(long.chunks()) == b"part"  # the draining one still serves its stream
    answer.close()
    long.close()
    await transport.close()
    await server.stop()
