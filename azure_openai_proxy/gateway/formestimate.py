"""A form (an image edit's, a transcription's) read for an estimate, and only then: a
request sent and never answered (`unanswered.note_unanswered`), a streamed picture left
or broken before Azure's usage (`picture_stream_usage`). An answered request, or a stream
that ended with Azure's usage, never parses its form here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure_openai_proxy.errors import GatewayError
from azure_openai_proxy.gateway.formmedia import HeldForm
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.governance.mediatokens import TRANSCRIBING, most_input_pictures
from azure_openai_proxy.normalize.picture_meter import PictureStreamMeter

__all__ = ["FormRead", "picture_stream_usage", "read_form"]



@dataclass(frozen=True, slots=True)
class FormRead:
    """What an estimate reads of a form: its pricing fields (None: it could not be read,
    its parts or a field that prices it; then `size`, its bytes, bounds the most it could
    ask), a transcription's `audio_seconds`, an edit's `picture_sizes`."""

    fields: HeldForm | dict[str, Any] | None
    size: int
    audio_seconds: float | None = None
    picture_sizes: list[tuple[int, int] | None] | None = None


def read_form(body: RequestBody, operation: str) -> FormRead:
    """`body`'s form, read now: its fields (`RequestBody.held_fields`) and its files' first
    bytes (`HeldForm`). Never raises for a form it cannot read: the request went out, and
    its estimate is the most the form could ask. An edit whose pictures cannot be read
    (its spool gone) counts the most pictures its bytes could carry, at the dearest size."""
    size = body.spool.size if body.spool is not None else 0
    try:
        fields = body.held_fields(operation)
    except (GatewayError, OSError):
        return FormRead(None, size)
    seconds = sizes = None
    if isinstance(fields, HeldForm):
        try:
            if operation in TRANSCRIBING:
                # the length its header states where it does: a best estimate
                seconds = fields.audio_length()
            elif operation == "images/edits":
                sizes = fields.picture_sizes()
        except OSError:  # the spool is gone: the units the fields say
            if operation == "images/edits":
                sizes = [None] * most_input_pictures(size)
    return FormRead(fields, size, seconds, sizes)


def picture_stream_usage(meter: PictureStreamMeter, body: RequestBody | None
                         ) -> dict[str, Any]:
    """A streamed picture's record usage (`PictureStreamMeter.recorded`): Azure's once its
    stream ended on its own, nothing of the request read; else from its body, an edit's
    form read now (a generation's body is JSON; a picture stream's form is an edit's),
    its input pictures counted as the budget's hold counts them."""
    usage = meter.measured()
    if usage is not None:
        return usage
    if body is None or body.json is not None or body.spool is None:
        return meter.recorded(body.json if body is not None else None)
    form = read_form(body, "images/edits")
    return meter.recorded(form.fields, form.picture_sizes, form.size)
