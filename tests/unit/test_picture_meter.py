"""The streamed picture's meter (normalize/picture_meter.py), fed plain bytes."""

from __future__ import annotations

import orjson

from azure_openai_proxy.normalize.picture_meter import PictureStreamMeter


def _event(kind: str, **fields: object) -> bytes:
    return (b"event: " + kind.encode() + b"\ndata: "
            + orjson.dumps({"type": kind, **fields}) + b"\n\n")


def _usage(text: int, image: int, out: int) -> dict[str, object]:
    return {"input_tokens": text + image,
            "input_tokens_details": {"text_tokens": text, "image_tokens": image},
            "output_tokens": out, "total_tokens": text + image + out}


_PARTIAL = _event("image_generation.partial_image", b64_json="iVBORw0K" * 5000,
                  partial_image_index=0, size="1024x1024")


def test_the_completed_events_usage_is_read_across_split_chunks() -> None:
    stream = _PARTIAL + _event("image_generation.completed", b64_json="iVBO" * 1000,
                               usage=_usage(9, 0, 272))
    meter = PictureStreamMeter()
    for start in range(0, len(stream), 7):  # split anywhere, in the base64 and the usage
        meter.feed(stream[start:start + 7])
    meter.finish()
    assert meter.ended and meter.completed == 1
    assert meter.usage == _usage(9, 0, 272)


def test_an_edits_completed_event_and_a_last_event_without_its_blank_line() -> None:
    meter = PictureStreamMeter()
    meter.feed(_event("image_edit.completed", b64_json="x", usage=_usage(5, 194, 1056))[:-2])
    assert meter.usage is None  # not yet known to be complete
    meter.finish()
    assert meter.usage == _usage(5, 194, 1056)


def test_several_pictures_usages_are_summed() -> None:
    meter = PictureStreamMeter()
    meter.feed(_event("image_generation.completed", b64_json="a", usage=_usage(9, 0, 272))
               + _PARTIAL
               + _event("image_generation.completed", b64_json="b", usage=_usage(0, 0, 272)))
    meter.finish()
    assert meter.completed == 2
    assert meter.usage == _usage(9, 0, 544)


def test_a_stream_cut_before_its_completed_event_has_no_usage_and_did_not_end() -> None:
    meter = PictureStreamMeter()
    meter.feed(_PARTIAL + _event("image_generation.completed", usage=_usage(9, 0, 272))[:40])
    assert meter.usage is None and not meter.ended and meter.completed == 0


def test_junk_is_passed_over() -> None:
    meter = PictureStreamMeter()
    meter.feed(b'data: {"usage": not json\n\n'
               b'data: ["usage"]\n\n'
               b'data: {"type": "image_generation.partial_image", "usage": {"output_tokens": 5}}\n\n'
               b'data: {"type": "image_generation.completed", "usage": "many"}\n\n'
               b": a comment\n\nevent: ping\n\n"
               + _event("image_generation.completed",
                        usage={"input_tokens": "9", "output_tokens": 272, "total_tokens": -1,
                               "input_tokens_details": None})
               + _event("image_generation.completed",
                        usage={"input_tokens": 3, "output_tokens": True, "total_tokens": 7,
                               "input_tokens_details": {"text_tokens": 3}}))
    meter.finish()
    # the first counted event's values kept as given; only counts are added
    assert meter.completed == 2
    assert meter.usage == {"input_tokens": 3, "output_tokens": 272, "total_tokens": 7,
                           "input_tokens_details": {"text_tokens": 3}}


_BODY = {"prompt": "a fox " * 10, "n": 2, "quality": "low", "size": "1024x1536",
         "partial_images": 1}


def test_a_stream_left_before_its_pictures_came_is_estimated_as_its_hold() -> None:
    meter = PictureStreamMeter()
    meter.feed(_PARTIAL + _event("image_generation.completed", usage=_usage(15, 0, 508)))
    # one picture of two came, and the stream did not end: the whole request, estimated
    usage = meter.recorded(_BODY)
    assert usage["estimated"] is True
    assert usage["completion_tokens"] == 2 * (408 + 100)  # as the budget held it
    assert usage["prompt_tokens"] == 15  # 60 characters
    assert usage["total_tokens"] == 15 + 2 * 508


def test_azures_usage_once_the_stream_ended_or_each_picture_came() -> None:
    meter = PictureStreamMeter()
    both = (_event("image_generation.completed", usage=_usage(15, 0, 508))
            + _event("image_generation.completed", usage=_usage(0, 0, 508)))
    meter.feed(both)
    assert meter.recorded(_BODY) == _usage(15, 0, 1016)  # each picture's: not ended
    one = PictureStreamMeter()
    one.feed(_event("image_generation.completed", usage=_usage(15, 0, 1016)))
    one.finish()
    assert one.recorded(_BODY) == _usage(15, 0, 1016)  # one for both, and the end


def test_a_form_that_cannot_be_read_is_estimated_as_the_most_it_could_ask() -> None:
    """10 pictures of the dearest quality and size (6,240 tokens) with 3 partial pictures
    each (100), 16 input pictures of the dearest size at high fidelity (65 + 4 tiles of
    129, and 6,144), a prompt of 32,000 characters: as many as its bytes could carry."""
    usage = PictureStreamMeter().recorded(None, form_bytes=10_000_000)
    assert usage == {"prompt_tokens": 8_000 + 16 * 6_725, "completion_tokens": 65_400,
                     "total_tokens": 8_000 + 16 * 6_725 + 65_400, "estimated": True,
                     "prompt_tokens_details": {"image_tokens": 16 * 6_725}}
    small = PictureStreamMeter().recorded(None, form_bytes=200)  # 3 picture parts at most
    assert small["prompt_tokens_details"] == {"image_tokens": 3 * 6_725}
    assert small["prompt_tokens"] == 50 + 3 * 6_725 and small["completion_tokens"] == 65_400


def test_an_edit_s_input_pictures_are_in_its_estimate() -> None:
    meter = PictureStreamMeter()
    meter.feed(_PARTIAL)
    usage = meter.recorded(_BODY, [(1024, 1024), None])
    pictures = 194 + 581  # a 1024x1024 picture's, and one of a size not read (the dearest)
    assert usage["prompt_tokens_details"] == {"image_tokens": pictures}
    assert usage["prompt_tokens"] == 15 + pictures
    assert usage["completion_tokens"] == 2 * (408 + 100)


def test_azures_usage_is_measured_only_once_its_stream_ended() -> None:
    meter = PictureStreamMeter()
    meter.feed(_event("image_generation.completed", usage=_usage(15, 0, 508)))
    assert meter.measured() is None  # not ended: `recorded` reads the request
    meter.finish()
    assert meter.measured() == _usage(15, 0, 508)
