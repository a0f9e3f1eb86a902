"""A stream's set-up touches fewer Python functions (issue 15, session 28: a stream's
fixed cost is cold code, ~260 distinct functions once a stream between other streams'
frames). Pinned here on the whole in-process path (FastServer, pipeline, FastTransport on
fake sockets, `bench.inprocess_stream`):

- a streamed request neither pokes the busy poll nor counts the requests open (the
  poke waits for the body, and a stream's is not answered soon: it used to poke at
  arrival and take the window back, ~12 Python calls);
- the coroutines a pushed stream's task resumes are three fewer: `GatewayApp.__call__`
  is the coroutine (not a call that makes `_serve`), `relay` a call that returns the
  coroutine to await (`_relay_stream`, not a coroutine awaiting it), and the relay's
  wait for the push is inline in `_relay_stream` (not a `_pushed` of its own);
- a request's path is an attribute, not a property read three times a request.

What the client receives is pinned by the stream tests (test_relay_push.py, ...)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import azure_openai_proxy
from azure_openai_proxy.http import busypoll
from azure_openai_proxy.http.busypoll import BusyPoll
from azure_openai_proxy.http.request import FastRequest
from bench.inprocess_stream import azure_frames, measure_stream

_PACKAGE = str(Path(azure_openai_proxy.__file__).parent)


@contextmanager
def _calls(seen: list[str], chains: list[list[str]]) -> Iterator[None]:
    """Every Python call of the package's code in this thread (its `_where` in `seen`),
    and for each call of `_StreamPush.changed` the package's frames above it then."""
    def profile(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(_PACKAGE):
            return
        seen.append(_where(frame))
        if code.co_name == "changed" and code.co_filename.endswith("streampush.py"):
            chain: list[str] = []
            above = frame.f_back
            while above is not None:
                if above.f_code.co_filename.startswith(_PACKAGE):
                    chain.append(_where(above))
                above = above.f_back
            chains.append(chain)

    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(None)


def _where(frame: FrameType) -> str:
    return f"{Path(frame.f_code.co_filename).relative_to(_PACKAGE)}:{frame.f_code.co_name}"


async def test_a_stream_neither_pokes_the_busy_poll_nor_counts_requests_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(busypoll, "cpus_available", lambda: 2.0)  # on even on one CPU
    made: list[BusyPoll] = []
    begin = BusyPoll.__init__

    def beginning(self: BusyPoll, *args: Any) -> None:
        begin(self, *args)
        made.append(self)

    monkeypatch.setattr(BusyPoll, "__init__", beginning)
    seen: list[str] = []
    with _calls(seen, []):
        _, writes = await measure_stream(2, 2, azure_frames(3), 1, callgrind=False)
    assert writes > 0 and made  # the gateway's busy poll was on
    called = set(seen)
    assert any(name.startswith("gateway/relay.py:") for name in called)  # it ran
    assert not {name for name in called if name in {
        "http/busypoll.py:poke", "http/busypoll.py:_tick", "http/busypoll.py:worth_spinning"}
        or name.endswith(":connections_in_use")}


async def test_the_pushed_streams_wait_resumes_six_of_our_coroutines() -> None:
    # The frames above `_StreamPush.changed` (the relay's wait for the push) when it is
    # called: each is resumed again whenever the task wakes (Azure's end, a slow
    # client). On main before this session: eight (connection `_serve`,
    # `serve_request`, `GatewayApp._serve`, `handle`, `send`, `relay`, `_relay_stream`,
    # `_pushed`).
    chains: list[list[str]] = []
    with _calls([], chains):
        await measure_stream(1, 2, azure_frames(3), 1, callgrind=False)
    assert len(chains) >= 2  # a wait a stream at least
    for chain in chains:
        assert chain == ["gateway/relay.py:_relay_stream",
                         "gateway/attempts.py:send", "gateway/pipeline.py:handle",
                         "gateway/app.py:__call__", "http/answer.py:serve_request",
                         "http/connection.py:_serve"]


async def test_a_requests_path_is_read_without_a_call() -> None:
    # `FastRequest.path` was a property that partitioned the target at each of its
    # three reads a request (the app's local routes and admin prefix, the pipeline's
    # path cache); it is an attribute made with the request.
    seen: list[str] = []
    with _calls(seen, []):
        await measure_stream(1, 1, azure_frames(3), 1, callgrind=False)
    assert "gateway/pipeline.py:handle" in seen  # the request went through
    assert "http/request.py:path" not in seen
    request = FastRequest(None, "POST", "/v1/chat/completions?api-version=2024-10-21",  # type: ignore[arg-type]
                          CIMultiDictProxy(CIMultiDict()), True, True, None, None)
    assert (request.path, request.query_string) == ("/v1/chat/completions",
                                                    "api-version=2024-10-21")
    bare = FastRequest(None, "GET", "/health", CIMultiDictProxy(CIMultiDict()),  # type: ignore[arg-type]
                       True, True, None, None)
    assert (bare.path, bare.query_string) == ("/health", "")
