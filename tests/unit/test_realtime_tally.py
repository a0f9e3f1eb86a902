"""`realtime_wire.ResponseTally`: a cut Realtime response's usage, estimated from what
Azure sent of it."""

from __future__ import annotations

import base64

import orjson

from azure_openai_proxy.gateway.realtime_wire import ResponseTally


def event(kind: str, **fields: object) -> str:
    return orjson.dumps({"type": kind, "event_id": "ev_1", **fields}).decode()


def test_no_response_in_progress_has_no_usage() -> None:
    tally = ResponseTally()
    tally.feed(event("session.created", session={"instructions": "response.created"}))
    tally.feed(event("response.output_text.delta", delta="hi"))
    assert tally.usage(100) is None


def test_text_deltas_are_a_token_each_and_the_context_is_the_input() -> None:
    tally = ResponseTally()
    tally.feed(event("response.created", response={"id": "resp_1"}))
    for kind in ("response.output_text.delta", "response.audio_transcript.delta",
                 "response.function_call_arguments.delta", "response.output_item.added"):
        tally.feed(event(kind, delta="x"))
    usage = tally.usage(120)
    assert usage is not None and usage["estimated"] is True
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (120, 3, 123)
    tally.clear()
    assert tally.usage(120) is None


def test_audio_deltas_count_by_their_seconds() -> None:
    tally = ResponseTally()
    tally.feed(event("response.created"))
    second = base64.b64encode(bytes(48_000)).decode()  # PCM16 at 24 kHz: one second
    for kind in ("response.audio.delta", "response.output_audio.delta"):
        tally.feed(event(kind, delta=second))
    usage = tally.usage(0)
    assert usage is not None
    # two seconds, and the events' other characters, rounded up: 21 tokens
    assert usage["output_token_details"] == {"text_tokens": 0, "audio_tokens": 21}
    assert tally.usage(0) == usage  # (read, not consumed)


def test_what_the_client_sent_since_the_last_response_is_input() -> None:
    # The estimate's input was only the last response's total: a session's first
    # response, cut, had none, whatever the client had sent for it.
    tally = ResponseTally()
    item = event("conversation.item.create", item={"text": "y" * 3928})
    assert len(item) == 4000
    tally.sent(item)
    tally.sent(event("input_audio_buffer.append",
                     audio=base64.b64encode(bytes(48_000)).decode()))  # a second
    tally.feed(event("response.created"))
    usage = tally.usage(100)
    assert usage is not None
    # a token per 4 characters; a second of audio, with its event's other characters: 11
    assert usage["input_token_details"] == {"cached_tokens": 0, "text_tokens": 100 + 1000,
                                            "audio_tokens": 11}
    assert usage["input_tokens"] == usage["total_tokens"] == 1111
    tally.clear()  # (a response done: Azure counted it)
    tally.feed(event("response.created"))
    assert tally.usage(100) == {**usage, "total_tokens": 100, "input_tokens": 100,
                                "input_token_details": {"cached_tokens": 0, "text_tokens": 100,
                                                        "audio_tokens": 0}}
