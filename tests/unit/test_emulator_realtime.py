"""The emulator's Realtime conversation (`emulator/realtime.py`): client events in,
server events out."""

from __future__ import annotations

import itertools

import orjson

from azure_openai_proxy.emulator.realtime import RealtimeSession

_COUNTER = itertools.count()


def new_id(prefix: str) -> str:
    return f"{prefix}{next(_COUNTER)}"


def test_a_cancel_before_the_first_delta_ends_the_response() -> None:
    # A `response.cancel` while the response waited for its first token was ignored
    # (the response counted as in progress only from its first delta): it ran to its end.
    session = RealtimeSession("ga", "gpt-realtime", 50, new_id)
    response = session.receive(orjson.dumps({"type": "response.create", "response": {
        "output_modalities": ["text"]}}))  # (its events not yet sent: its first token awaited)
    assert list(session.receive(b'{"type":"response.cancel"}')) == []
    events = [event for event, _ in response]
    assert not [e for e in events if e["type"].endswith(".delta")]
    done = events[-1]
    assert (done["type"], done["response"]["status"]) == ("response.done", "cancelled")
    assert done["response"]["usage"]["output_tokens"] == 0


def test_a_cancel_with_no_response_in_progress_is_ignored() -> None:
    session = RealtimeSession("ga", "gpt-realtime", 5, new_id)
    assert list(session.receive(b'{"type":"response.cancel"}')) == []
    events = [event for event, _ in session.receive(b'{"type":"response.create"}')]
    assert events[-1]["response"]["status"] == "completed"
    assert list(session.receive(b'{"type":"response.cancel"}')) == []  # (done: nothing to end)
    events = [event for event, _ in session.receive(b'{"type":"response.create"}')]
    assert events[-1]["response"]["status"] == "completed"
