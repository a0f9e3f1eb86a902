"""`realtime_tally.ResponseTally`: a cut Realtime response's usage, estimated from what
Azure sent of it, for each response in progress."""

from __future__ import annotations

import base64

import orjson

from azure_openai_proxy.gateway.realtime_tally import MOST_RESPONSES, ResponseTally


def event(kind: str, **fields: object) -> str:
    return orjson.dumps({"type": kind, "event_id": "ev_1", **fields}).decode()


def created(response_id: str) -> str:
    return event("response.created", response={"id": response_id, "status": "in_progress"})


def delta(response_id: str, kind: str = "response.output_text.delta") -> str:
    return event(kind, response_id=response_id, item_id="item_1", delta="x")


def test_no_response_in_progress_has_no_usage() -> None:
    tally = ResponseTally()
    tally.feed(event("session.created", session={"instructions": "response.created"}))
    tally.feed(event("response.output_text.delta", delta="hi"))
    assert tally.usages(100) == [] and not tally.started


def test_text_deltas_are_a_token_each_and_the_context_is_the_input() -> None:
    tally = ResponseTally()
    tally.feed(created("resp_1"))
    for kind in ("response.output_text.delta", "response.audio_transcript.delta",
                 "response.function_call_arguments.delta", "response.output_item.added"):
        tally.feed(event(kind, delta="x"))
    [usage] = tally.usages(120)
    assert usage["estimated"] is True
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (120, 3, 123)
    tally.finished("resp_1")
    assert tally.usages(120) == [] and not tally.started


def test_audio_deltas_count_by_their_seconds() -> None:
    tally = ResponseTally()
    tally.feed(event("response.created"))  # (no id: tallied all the same)
    second = base64.b64encode(bytes(48_000)).decode()  # PCM16 at 24 kHz: one second
    for kind in ("response.audio.delta", "response.output_audio.delta"):
        tally.feed(event(kind, delta=second))
    [usage] = tally.usages(0)
    # two seconds, and the events' other characters, rounded up: 21 tokens
    assert usage["output_token_details"] == {"text_tokens": 0, "audio_tokens": 21}
    assert tally.usages(0) == [usage]  # (read, not consumed)
    tally.finished(None)  # (a response.done without an id: the oldest response's)
    assert not tally.started


def test_what_the_client_sent_before_a_response_is_its_input() -> None:
    # The estimate's input was only the last response's total: a session's first
    # response, cut, had none, whatever the client had sent for it.
    tally = ResponseTally()
    item = event("conversation.item.create", item={"text": "y" * 3928})
    assert len(item) == 4000
    tally.sent(item)
    tally.sent(event("input_audio_buffer.append",
                     audio=base64.b64encode(bytes(48_000)).decode()))  # a second
    tally.feed(created("resp_1"))
    [usage] = tally.usages(100)
    # a token per 4 characters; a second of audio, with its event's other characters: 11
    assert usage["input_token_details"] == {"cached_tokens": 0, "text_tokens": 100 + 1000,
                                            "audio_tokens": 11}
    assert usage["input_tokens"] == usage["total_tokens"] == 1111
    tally.finished("resp_1")  # (a response done: Azure counted it)
    tally.feed(created("resp_2"))
    assert tally.usages(100) == [{**usage, "total_tokens": 100, "input_tokens": 100,
                                  "input_token_details": {"cached_tokens": 0,
                                                          "text_tokens": 100,
                                                          "audio_tokens": 0}}]


def test_concurrent_responses_are_tallied_apart() -> None:
    # An out-of-band response (`conversation: "none"`) runs beside the conversation's:
    # the first `response.done` cleared the one tally for both, so the other, cut then,
    # was not recorded; and each one's deltas were charged to the one tally.
    tally = ResponseTally()
    item = event("conversation.item.create", item={"text": "y" * 72})
    assert len(item) == 144  # (36 tokens)
    tally.sent(item)
    tally.feed(created("resp_a"))
    tally.feed(delta("resp_a"))
    tally.feed(created("resp_b"))  # out of band, beside it
    for _ in range(3):
        tally.feed(delta("resp_b"))
    tally.feed(delta("resp_a"))
    tally.feed(delta("resp_unknown"))  # (named by no response: the one started last)
    assert [u["output_tokens"] for u in tally.usages(10)] == [2, 4]
    assert [u["input_tokens"] for u in tally.usages(10)] == [10 + 36, 10]
    tally.finished("resp_b")  # its usage is Azure's
    tally.feed(delta("resp_a"))
    assert [u["output_tokens"] for u in tally.usages(10)] == [3]  # resp_a's own, cut
    tally.feed(delta("resp_a"))  # (one in progress: its own, without a look at its id)
    tally.finished("resp_other")  # (a response not tallied: nothing ends)
    assert [u["output_tokens"] for u in tally.usages(10)] == [4]


def test_responses_tallied_at_once_are_bounded() -> None:
    tally = ResponseTally()
    for n in range(MOST_RESPONSES + 5):
        tally.feed(created(f"resp_{n}"))
    assert len(tally.usages(0)) == MOST_RESPONSES
    tally.feed(delta(f"resp_{MOST_RESPONSES + 1}"))  # not tallied: the last one started
    assert tally.usages(0)[-1]["output_tokens"] == 1
    for n in range(MOST_RESPONSES):
        tally.finished(f"resp_{n}")
    assert not tally.started
    tally.feed(delta("resp_0"))
    assert tally.usages(0) == []
