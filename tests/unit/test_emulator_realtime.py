"""The emulator's Realtime conversation (`emulator/realtime.py`): client events in,
server events out."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import orjson

from azure_openai_proxy.emulator.realtime import RealtimeSession, ResponseEvents

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


def _not_active(answer: Iterable[tuple[dict[str, Any], int]]) -> None:
    [(refused, _)] = answer
    assert (refused["type"], refused["error"]["code"]) == ("error", "response_cancel_not_active")


def test_a_cancel_with_no_response_in_progress_is_refused_and_ends_nothing() -> None:
    # Azure answers it `response_cancel_not_active` (a cancel racing its response's
    # `response.done`, too); the emulator said nothing.
    session = RealtimeSession("ga", "gpt-realtime", 5, new_id)
    _not_active(session.receive(b'{"type":"response.cancel"}'))
    events = [event for event, _ in session.receive(b'{"type":"response.create"}')]
    assert events[-1]["response"]["status"] == "completed"
    _not_active(session.receive(b'{"type":"response.cancel"}'))  # (done: nothing to end)
    _not_active(session.receive(b'{"type":"response.cancel","response_id":"resp_x"}'))
    events = [event for event, _ in session.receive(b'{"type":"response.create"}')]
    assert events[-1]["response"]["status"] == "completed"


def test_an_out_of_band_response_runs_beside_and_leaves_the_conversation_as_it_was() -> None:
    session = RealtimeSession("ga", "gpt-realtime", 4, new_id)
    session.receive(orjson.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}}))
    talk = session.receive(b'{"type":"response.create"}')
    aside = session.receive(orjson.dumps({"type": "response.create", "response": {
        "conversation": "none", "metadata": {"topic": "t"},
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "one two three"}]}]}}))
    assert isinstance(aside, ResponseEvents) and aside.beside
    assert isinstance(talk, ResponseEvents) and not talk.beside
    first = next(aside)[0]["response"]["id"]
    # A cancel names its response; without a name, it is the conversation's.
    assert list(session.receive(b'{"type":"response.cancel"}')) == []
    talked = [event for event, _ in talk]
    assert talked[-1]["response"]["status"] == "cancelled"
    asides = [event for event, _ in aside]
    done = asides[-1]["response"]
    assert (done["id"], done["status"], done["metadata"]) == (first, "completed", {"topic": "t"})
    assert all(e.get("response_id", first) == first for e in asides)
    # Its input its own, not the conversation's; and nothing added to the conversation
    # (the cancelled response added nothing either): the next response's input is the
    # cancelled one's.
    talked_in = talked[-1]["response"]["usage"]["input_tokens"]
    assert done["usage"]["input_tokens"] != talked_in
    later = [event for event, _ in session.receive(b'{"type":"response.create"}')]
    assert later[-1]["response"]["usage"]["input_tokens"] == talked_in
    cancelled = session.receive(b'{"type":"response.create"}')
    named = next(iter(cancelled))[0]["response"]["id"]
    session.receive(orjson.dumps({"type": "response.cancel", "response_id": named}))
    assert [event for event, _ in cancelled][-1]["response"]["status"] == "cancelled"


def test_a_second_response_in_the_conversation_is_refused_while_one_runs() -> None:
    """Azure runs one response at a time in the conversation and refuses another with
    `conversation_already_has_active_response` (out-of-band ones run beside); the
    emulator queued it, so the gateway's handling of that refusal went untested."""
    session = RealtimeSession("ga", "gpt-realtime", 4, new_id)
    talk = session.receive(b'{"type":"response.create"}')
    assert isinstance(talk, ResponseEvents)
    [(refused, _)] = session.receive(b'{"type":"response.create","event_id":"ev_2"}')
    error = refused["error"]
    assert (refused["type"], error["code"], error["event_id"]) == (
        "error", "conversation_already_has_active_response", "ev_2")
    aside = session.receive(b'{"type":"response.create","response":{"conversation":"none"}}')
    assert isinstance(aside, ResponseEvents) and aside.beside
    assert [event for event, _ in talk][-1]["response"]["status"] == "completed"
    assert [event for event, _ in aside][-1]["response"]["status"] == "completed"
    after = [event for event, _ in session.receive(b'{"type":"response.create"}')]
    assert after[-1]["response"]["status"] == "completed"
