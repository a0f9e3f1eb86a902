"""The emulator's realtime conversation (`emulator/realtime.py`): events in, events out."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import orjson
import pytest

from azure_openai_proxy.emulator.realtime import Family, RealtimeSession


def session(family: Family = "preview", tokens: int = 5) -> RealtimeSession:
    serial = itertools.count(1)
    return RealtimeSession(family, "gpt-4o-realtime-preview-2024-12-17", tokens,
                           lambda prefix: f"{prefix}{next(serial)}")


def send(s: RealtimeSession, event: Any) -> list[dict[str, Any]]:
    raw = event if isinstance(event, str) else orjson.dumps(event).decode()
    return [e for e, _ in s.receive(raw)]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_a_session_opens_with_session_created() -> None:
    [created] = session().opened()
    assert created["type"] == "session.created"
    assert created["session"]["model"] == "gpt-4o-realtime-preview-2024-12-17"
    assert session("ga").opened()[0]["session"]["type"] == "realtime"


def test_session_update_is_answered_with_the_whole_session() -> None:
    s = session()
    [updated] = send(s, {"type": "session.update", "session": {"instructions": "be brief",
                                                                 "modalities": ["text"]}})
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] == "be brief"
    assert updated["session"]["voice"] == "alloy"


@pytest.mark.parametrize("family, delta", [("preview", "response.text.delta"),
                                           ("ga", "response.output_text.delta")])
def test_a_text_response_uses_the_familys_event_names(family: Family, delta: str) -> None:
    s = session(family)
    [created] = send(s, {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    assert created["type"] == "conversation.item.created"
    events = send(s, {"type": "response.create", "response": {"modalities": ["text"]}})
    assert types(events)[:3] == ["response.created", "response.output_item.added",
                                 "response.content_part.added"]
    deltas = [e["delta"] for e in events if e["type"] == delta]
    assert len(deltas) == 5
    done = events[-1]
    assert done["type"] == "response.done"
    usage = done["response"]["usage"]
    assert usage["output_tokens"] == 5 == usage["output_token_details"]["text_tokens"]
    assert usage["input_tokens"] == usage["input_token_details"]["text_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert done["response"]["output"][0]["content"][0]["text"] == "".join(deltas)


def test_an_audio_response_sends_base64_pcm16_and_bills_audio_tokens() -> None:
    s = session("ga")
    events = send(s, {"type": "response.create",
                      "response": {"output_modalities": ["audio", "text"]}})
    audio = [base64.b64decode(e["delta"]) for e in events
             if e["type"] == "response.output_audio.delta"]
    assert audio and all(len(chunk) % 2 == 0 for chunk in audio)
    assert "response.output_audio_transcript.delta" in types(events)
    usage = events[-1]["response"]["usage"]
    assert usage["output_token_details"]["audio_tokens"] > 0


def test_input_audio_is_counted_once_committed() -> None:
    s = session()
    chunk = base64.b64encode(bytes(48_000)).decode()  # one second of PCM16 at 24 kHz
    assert send(s, {"type": "input_audio_buffer.append", "audio": chunk}) == []
    assert types(send(s, {"type": "input_audio_buffer.commit"})) == [
        "input_audio_buffer.committed"]
    usage = send(s, {"type": "response.create"})[-1]["response"]["usage"]
    assert usage["input_token_details"]["audio_tokens"] == 10


@pytest.mark.parametrize("event, code, param", [
    ("{not json", "invalid_json", None),
    ("[1, 2]", "invalid_json", None),
    ({"type": "no.such.event"}, "invalid_value", "type"),
    ({"event_id": "e1"}, "invalid_value", "type"),
    ({"type": "session.update"}, "invalid_value", "session"),
    ({"type": "session.update", "session": {"modalities": ["smell"]}}, "invalid_value",
     "session.modalities"),
    ({"type": "conversation.item.create", "item": "x"}, "invalid_value", "item"),
    ({"type": "response.create", "response": []}, "invalid_value", "response"),
    ({"type": "response.create", "response": {"modalities": []}}, "invalid_value",
     "response.modalities"),
    ({"type": "input_audio_buffer.append"}, "invalid_value", "audio"),
])
def test_bad_events_get_one_error_event(event: Any, code: str, param: str | None) -> None:
    s = session()
    [error] = send(s, event)
    assert error["type"] == "error"
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert error["error"]["type"] == "invalid_request_error"
    # The session goes on.
    assert types(send(s, {"type": "session.update", "session": {}})) == ["session.updated"]


def test_the_error_names_the_bad_events_id() -> None:
    [error] = send(session(), {"type": "session.update", "event_id": "evt_9"})
    assert error["error"]["event_id"] == "evt_9"


@pytest.mark.parametrize("modalities, after", [(["text"], "response.text.delta"),
                                               (["text", "audio"], "response.audio.delta")])
def test_response_cancel_ends_the_response_with_its_usage_so_far(
    modalities: list[str], after: str,
) -> None:
    s = session(tokens=8)
    send(s, {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}})
    events = iter(s.receive(orjson.dumps({"type": "response.create", "response": {
        "modalities": modalities}}).decode()))
    seen = [next(events)[0]]
    while seen[-1]["type"] != after:  # the first delta of `after`'s kind, then the cancel
        seen.append(next(events)[0])
    assert send(s, {"type": "response.cancel"}) == []  # answered by the response itself
    rest = [e for e, _ in events]
    assert types(rest) == ["response.done"]
    response = rest[0]["response"]
    usage = response["usage"]
    assert response["status"] == "cancelled"
    texts = sum(t == "response.audio_transcript.delta" or t == "response.text.delta"
                for t in types(seen))
    assert usage["output_token_details"]["text_tokens"] == texts
    assert usage["output_token_details"]["audio_tokens"] == (1 if after == "response.audio.delta"
                                                            else 0)
    assert usage["input_tokens"] > 0


def test_response_cancel_with_no_response_in_flight_is_refused_and_ends_nothing() -> None:
    # Azure answers it `response_cancel_not_active` (tests/unit/test_emulator_realtime.py)
    s = session()
    [refused] = send(s, {"type": "response.cancel"})
    assert (refused["type"], refused["error"]["code"]) == ("error", "response_cancel_not_active")
    assert types(send(s, {"type": "response.create"}))[-1] == "response.done"
