"""The HTTP engine looks its event loop up once, not per connection or per stream:
`asyncio.get_running_loop()` is a getpid() system call on Python 3.11 (issue 15)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bench.inprocess_stream import azure_frames, measure_stream

_ENGINE = ("azure_openai_proxy.http.connection", "azure_openai_proxy.http.request",
           "azure_openai_proxy.http.server")


async def test_connections_and_streams_do_not_look_the_loop_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    callers: list[str] = []
    lookup = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        callers.append(sys._getframe(1).f_globals["__name__"])
        return lookup()

    monkeypatch.setattr(asyncio, "get_running_loop", counted)
    await measure_stream(5, 2, azure_frames(3), 1, callgrind=False)  # 5 connections, 10 streams
    assert callers  # the spy saw the lookups made elsewhere
    # The server's one lookup (its first connection's); none per connection or stream.
    assert sum(caller in _ENGINE for caller in callers) <= 1
