"""Busy polling and a request whose body comes apart from its head (review of issue 15's
streamflat). httpx, and so the `openai` SDK, writes a request's head and its body in two
sends: on loopback the gateway most often reads the head alone (418 of 500 requests, an
httpx client against a uvloop server, session 28). The loop must stay awake for the
body's rest, as it did when every request poked at arrival; once the body says
`"stream": true` that spin is taken back (Azure's first frame comes after its time to
first token). A body that came with its head pokes only once it is read, and a stream's
not at all (`test_streamflat_calls.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from azure_openai_proxy.http import busypoll
from azure_openai_proxy.http.busypoll import BusyPoll
from azure_openai_proxy.http.server import FastServer
from azure_openai_proxy.upstream.fast import FastTransport
from bench import inprocess, inprocess_stream
from bench.inprocess_stream import azure_frames
from tests.waiting import until_async


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> list[BusyPoll]:
    """The busy polls made, on a clock that moves a picosecond a read: a window started
    in a test has not passed by its end, however slowly a loaded machine runs it."""
    made: list[BusyPoll] = []
    begin = BusyPoll.__init__

    def beginning(self: BusyPoll, *args: object, **kwargs: object) -> None:
        begin(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    clock = itertools.count(1)
    monkeypatch.setattr(busypoll, "perf_counter", lambda: next(clock) * 1e-12)
    monkeypatch.setattr(busypoll, "cpus_available", lambda: 2.0)  # on even on one CPU
    monkeypatch.setattr(BusyPoll, "__init__", beginning)
    return made


def _apart(request: bytes) -> tuple[bytes, bytes]:
    head, body = request.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", body


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def _serving(polls: list[BusyPoll], transport: type[FastTransport] | None = None,
                   ) -> AsyncIterator[tuple[BusyPoll, asyncio.Protocol, list[bytes]]]:
    """The in-process gateway (`bench.inprocess`), its busy poll, a client connection to
    it and what it writes to that client."""
    app = inprocess._gateway_app(transport_class=transport)
    await app.startup()
    server = FastServer(app)
    writes: list[bytes] = []
    conn = server.connection()
    conn.connection_made(inprocess.FakeSocket(writes.append))  # type: ignore[arg-type]
    try:
        [busy] = polls
        yield busy, conn, writes
    finally:
        server.close()
        await app.cleanup()


async def test_a_json_body_sent_apart_from_its_head_is_awaited_awake(
        polls: list[BusyPoll]) -> None:
    async with _serving(polls) as (busy, conn, writes):
        head, body = _apart(inprocess.REQUEST)
        conn.data_received(head)
        await _turns(5)  # the handler runs, and waits for the body
        assert not writes
        assert busy.spinning  # the loop polls for the body's rest, it does not sleep
        conn.data_received(body)
        await until_async(lambda: writes)
        assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")


class _HeldTransport(inprocess_stream._StreamTransport):
    """Azure's answer to a stream comes when the test says (its time to first token)."""

    reads = inprocess_stream._reads(azure_frames(3), 1)
    connections: ClassVar[list[inprocess_stream._PacedConnection]] = []

    async def _connect(self, pool: object, target: object) -> inprocess._Connection:
        conn = inprocess_stream._PacedConnection(pool)  # type: ignore[arg-type]
        conn.reads = self.reads
        held = self.connections  # the request written to Azure: held, not answered
        conn.connection_made(inprocess.FakeSocket(  # type: ignore[arg-type]
            lambda _: None if conn in held else held.append(conn)))
        pool.every.add(conn)  # type: ignore[attr-defined]
        return conn


async def test_a_streams_body_sent_apart_is_awaited_awake_then_its_spin_taken_back(
        polls: list[BusyPoll], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_HeldTransport, "connections", [])
    async with _serving(polls, _HeldTransport) as (busy, conn, writes):
        head, body = _apart(inprocess_stream._request())
        conn.data_received(head)
        await _turns(5)
        assert busy.spinning  # as for any body's rest
        conn.data_received(body)
        await until_async(lambda: _HeldTransport.connections)  # sent to Azure
        await _turns(3)
        assert not writes  # Azure has not answered
        assert not busy.spinning  # a stream: no spin until its first frame
        [upstream] = _HeldTransport.connections
        upstream.answer(b"")
        await until_async(lambda: b"data: [DONE]" in b"".join(writes))
        assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
