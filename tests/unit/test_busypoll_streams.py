"""Busy polling and streams (issue 15): a streamed answer does not start a window of
spinning when Azure's head arrives (its frames follow at Azure's pace, not at once); the
request's arrival still does, and a JSON answer still does too."""

from __future__ import annotations

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


async def test_a_stream_pokes_once_for_its_request_not_for_azures_answer(
        pokes: list[None]) -> None:
    await measure_stream(3, 2, azure_frames(3), 1, callgrind=False)
    assert len(pokes) == 6  # three clients, two streams each: one poke per request


async def test_a_json_answer_still_pokes_when_azure_answers(pokes: list[None]) -> None:
    await inprocess.measure(10, 1, bare=False, callgrind=False)  # one client: 10 requests
    assert len(pokes) == 2 * 10  # each request's arrival, and Azure's answer
