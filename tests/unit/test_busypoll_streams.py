"""Busy polling and streams (issue 15): a streamed answer does not start a window of
spinning when its request arrives or when Azure's head arrives (its frames follow at
Azure's pace, not at once); a JSON request's arrival still does, and its answer too."""

from __future__ import annotations

import asyncio

import pytest

from azure_openai_proxy.http import busypoll
from azure_openai_proxy.http.busypoll import BusyPoll
from bench import inprocess
from bench.inprocess_stream import azure_frames, measure_stream


@pytest.fixture
def pokes(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    counted: list[None] = []
    poke = BusyPoll.poke

    def counting(self: BusyPoll) -> None:
        counted.append(None)
        poke(self)

    monkeypatch.setattr(busypoll, "cpus_available", lambda: 2.0)  # on even on one CPU
    monkeypatch.setattr(BusyPoll, "poke", counting)
    return counted


async def test_a_stream_pokes_neither_for_its_request_nor_for_azures_answer(
        pokes: list[None]) -> None:
    # The poke waits for the body: a stream's (`"stream": true`) is not answered soon,
    # so its request pokes not at all (issue 15: the poke, the count of requests open
    # and taking it back were ~12 Python calls a stream, each cold).
    await measure_stream(3, 2, azure_frames(3), 1, callgrind=False)
    assert len(pokes) == 0  # three clients, two streams each


async def test_a_json_answer_still_pokes_when_azure_answers(pokes: list[None]) -> None:
    await inprocess.measure(10, 1, bare=False, callgrind=False)  # one client: 10 requests
    assert len(pokes) == 2 * 10  # each request's arrival, and Azure's answer


async def test_with_many_streams_open_a_poke_starts_no_spin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole path (FastServer, pipeline, FastTransport on fake sockets): 20 clients
    # stream at once (their requests poke nothing). Two loop turns after the last of
    # them reached Azure, with the 20 streams still open, the pipeline's busy poll is
    # poked, as a JSON request's arrival would.
    from bench.inprocess_stream import _StreamTransport

    transports: list[_StreamTransport] = []
    polls: list[BusyPoll] = []
    connects: list[None] = []
    made, begun, connect = _StreamTransport.__init__, BusyPoll.__init__, _StreamTransport._connect

    def making(self: _StreamTransport, *args: object, **kwargs: object) -> None:
        made(self, *args, **kwargs)  # type: ignore[arg-type]
        transports.append(self)

    def beginning(self: BusyPoll, *args: object, **kwargs: object) -> None:
        begun(self, *args, **kwargs)  # type: ignore[arg-type]
        polls.append(self)

    async def connecting(self: _StreamTransport, *args: object) -> object:
        conn = await connect(self, *args)  # type: ignore[arg-type]
        connects.append(None)
        if len(connects) == 20:  # the last stream's upstream connection
            asyncio.get_running_loop().call_soon(poke_later, polls[-1], 2)
        return conn

    seen: list[tuple[int, bool, bool]] = []  # (streams open, was spinning, spinning after)

    def poke_later(busy: BusyPoll, turns: int) -> None:
        if turns:
            asyncio.get_running_loop().call_soon(poke_later, busy, turns - 1)
            return
        was = busy._spinning
        busy.poke()
        seen.append((transports[-1].connections_in_use(), was, busy._spinning))

    # Each read of the busy poll's clock is a millisecond later: a window has passed by
    # the loop turn after its poke (in real time one window would span all these turns).
    ticks = iter(range(1, 10**9))
    monkeypatch.setattr(busypoll, "perf_counter", lambda: next(ticks) / 1000)
    monkeypatch.setattr(busypoll, "cpus_available", lambda: 2.0)
    monkeypatch.setattr(_StreamTransport, "__init__", making)
    monkeypatch.setattr(BusyPoll, "__init__", beginning)
    monkeypatch.setattr(_StreamTransport, "_connect", connecting)
    await measure_stream(20, 1, azure_frames(10), 1, callgrind=False)
    [(open_now, was_spinning, spinning)] = seen
    assert open_now == 20 and not was_spinning  # the moment this test is about
    assert not spinning  # no spin: the streams' own frames wake the loop


def _ticking(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """The busy poll's clock advances a microsecond a read (so a 200 µs window lasts
    about 200 turns of the loop, whatever the machine), and each turn of a spin counted."""
    ticks = iter(range(1, 10**9))
    monkeypatch.setattr(busypoll, "perf_counter", lambda: next(ticks) / 1_000_000)
    monkeypatch.setattr(busypoll, "cpus_available", lambda: 2.0)
    turns: list[None] = []
    tick = BusyPoll._tick

    def counting(self: BusyPoll) -> None:
        turns.append(None)
        tick(self)

    monkeypatch.setattr(BusyPoll, "_tick", counting)
    return turns


async def _turns_after(turns: list[None]) -> int:
    """The spin's turns once any window left has run out (a spin's turn per loop turn)."""
    for _ in range(1_000):
        await asyncio.sleep(0)
    return len(turns)


async def test_a_streamed_request_starts_no_spin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One client, so the worker is quiet enough for a spin: a stream's request does not
    # poke once its body says `stream: true`: Azure's first bytes come after its time to
    # first token.
    turns = _ticking(monkeypatch)
    await measure_stream(1, 3, azure_frames(3), 1, callgrind=False)
    assert await _turns_after(turns) <= 3 * 2  # a turn or two per request, not a window's worth


async def test_a_json_request_keeps_its_arrivals_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    turns = _ticking(monkeypatch)  # the general path, for comparison
    await inprocess.measure(3, 1, bare=False, callgrind=False)
    assert await _turns_after(turns) >= 3 * 50
