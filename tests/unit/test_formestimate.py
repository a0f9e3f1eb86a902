"""A form read for an estimate, and only then (gateway/formestimate.py): a streamed
edit that ended with Azure's usage never parses its form (it was parsed when its stream
began, whatever came after); one left before it is estimated with its input pictures,
read from their headers; one whose form cannot be read, as the most it could ask."""

from __future__ import annotations

from typing import Any

import orjson

from azure_openai_proxy.emulator import media
from azure_openai_proxy.gateway.formestimate import picture_stream_usage, read_form
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.governance.mediatokens import input_picture_tokens
from azure_openai_proxy.normalize.picture_meter import PictureStreamMeter


class _Counted(RequestBody):
    """A real form whose readings are counted."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(spool=SpooledBody(raw, None, len(raw)), boundary=b"b")
        self.readings = 0

    def held_fields(self, operation: str) -> dict[str, Any] | None:
        self.readings += 1
        return super().held_fields(operation)


def _form(*parts: tuple[str, bytes]) -> bytes:
    out = b""
    for name, value in parts:
        file = b'; filename="a.png"' if name == "image" else b""
        out += (b'--b\r\nContent-Disposition: form-data; name="' + name.encode() + b'"'
                + file + b"\r\n\r\n" + value + b"\r\n")
    return out + b"--b--\r\n"


_EDIT = _form(("prompt", b"add a hat"), ("quality", b"low"), ("size", b"1024x1024"),
              ("partial_images", b"1"), ("image", media.png(1024, 1024, (1, 2, 3))),
              ("image", media.png(2048, 512, (1, 2, 3))))
_USAGE = {"input_tokens": 999, "output_tokens": 372, "total_tokens": 1371}
_COMPLETED = (b"event: image_edit.completed\ndata: "
              + orjson.dumps({"type": "image_edit.completed", "usage": _USAGE}) + b"\n\n")


def test_a_stream_that_ended_with_azures_usage_never_reads_its_form() -> None:
    body = _Counted(_EDIT)
    meter = PictureStreamMeter()
    meter.feed(_COMPLETED)
    meter.finish()
    assert picture_stream_usage(meter, body) == _USAGE
    assert body.readings == 0


def test_a_left_stream_reads_its_form_and_its_input_pictures() -> None:
    body = _Counted(_EDIT)
    meter = PictureStreamMeter()
    meter.feed(b"event: image_edit.partial_image\ndata: {}\n\n")
    usage = picture_stream_usage(meter, body)
    assert body.readings == 1
    pictures = input_picture_tokens((1024, 1024)) + input_picture_tokens((2048, 512))
    assert pictures == 194 + 581
    assert usage == {"prompt_tokens": 3 + pictures, "completion_tokens": 272 + 100,
                     "total_tokens": 3 + pictures + 372, "estimated": True,
                     "prompt_tokens_details": {"image_tokens": pictures}}


def test_a_form_that_cannot_be_read_is_read_as_its_size() -> None:
    garbled = _EDIT.replace(b"--b--", b"")  # no closing boundary: a 400 to a budget
    body = RequestBody(spool=SpooledBody(garbled, None, len(garbled)), boundary=b"b")
    read = read_form(body, "images/edits")
    assert read.fields is None and read.size == len(garbled)
    usage = picture_stream_usage(PictureStreamMeter(), body)
    assert usage["completion_tokens"] == 10 * 6_240 + 10 * 3 * 100
    assert usage["prompt_tokens_details"] == {"image_tokens": 16 * 6_725}

