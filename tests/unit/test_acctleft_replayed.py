"""A resumed Responses stream replays events an earlier stream of its response may have
relayed and counted in its estimate (cut, or its client left): the meter counts no text
delta up to `after` (by `sequence_number`) and says the last one it counted (`last`);
`CountedUsage` keeps the last one its response's estimates counted and hands it, as
`replayed`, to the resumed stream before it is sent (`RequestRecord.sequence`)."""

from __future__ import annotations

import orjson

from azure_openai_proxy.gateway.rereads import CountedUsage
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.observability.record import RequestRecord


def _delta(number: int, text: str) -> bytes:
    event = {"type": "response.output_text.delta", "sequence_number": number,
             "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text}
    return b"event: response.output_text.delta\ndata: " + orjson.dumps(event) + b"\n\n"


def _fed(after: int, *deltas: tuple[int, str]) -> ResponsesStreamMeter:
    meter = ResponsesStreamMeter()
    meter.after = after
    for number, text in deltas:
        meter.feed(_delta(number, text))
    return meter


def test_the_meter_counts_no_delta_up_to_after() -> None:
    deltas = ((4, "abcd"), (5, "efgh"), (6, "ij"))
    whole = _fed(-1, *deltas)
    assert (whole.content_chars, whole.last) == (10, 6)
    resumed = _fed(5, *deltas)  # main: 10 (the replayed deltas 4 and 5 again)
    assert (resumed.content_chars, resumed.last) == (2, 6)
    assert (_fed(6, *deltas).content_chars, _fed(6, *deltas).last) == (0, -1)
    unnumbered = ResponsesStreamMeter()
    unnumbered.after = 5
    unnumbered.feed(b"data: " + orjson.dumps({"type": "response.output_text.delta",
                                              "delta": "xyz"}) + b"\n\n")
    assert (unnumbered.content_chars, unnumbered.last) == (3, -1)  # counted, as before


def _estimated(method: str, sequence: int, completion: int) -> RequestRecord:
    record = RequestRecord("r", method)
    record.stream, record.sequence = True, sequence
    record.usage = {"prompt_tokens": 10 if method == "POST" else 0,
                    "completion_tokens": completion, "estimated": True}
    record.created_id = "resp_1" if method == "POST" else None
    return record


def test_counted_usage_hands_the_last_counted_delta_to_a_resumed_stream() -> None:
    counted = CountedUsage()
    assert counted.replayed("GET", "responses/resp_1") == -1  # nothing counted yet
    counted.answered("POST", "responses", _estimated("POST", 7, 3), None,
                     {"background": True, "stream": True})
    assert counted.replayed("GET", "responses/resp_1") == 7
    assert counted.replayed("POST", "responses/resp_1/cancel") == -1
    assert counted.replayed("GET", "responses/resp_1/input_items") == -1
    assert counted.replayed("GET", "responses/resp_2") == -1
    # a resumed stream left again: its last delta counts on; one that counted none
    # (its meter's last: -1) leaves it where it was
    counted.answered("GET", "responses/resp_1", _estimated("GET", 12, 2), None, None)
    assert counted.replayed("GET", "responses/resp_1") == 12
    counted.answered("GET", "responses/resp_1", _estimated("GET", -1, 0), None, None)
    assert counted.replayed("GET", "responses/resp_1") == 12
    # Azure's usage at last: less both estimates, and nothing is skipped any more
    done = RequestRecord("d", "GET")
    done.stream, done.usage = True, {"input_tokens": 9, "output_tokens": 8}
    counted.answered("GET", "responses/resp_1", done, None, None)
    assert done.usage == {"input_tokens": 0, "output_tokens": 3}
    assert counted.replayed("GET", "responses/resp_1") == -1
