"""The usage of a request sent and never answered (its client left before the answer,
Azure timed out): Azure may bill it, so it is recorded with an estimate, flagged, rather
than as free. Read only on that path: an answered request never pays for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.gateway.answerusage import with_image_gen
from azure_openai_proxy.gateway.formestimate import read_form
from azure_openai_proxy.gateway.ledgerrows import UNIT_PRICED
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.gateway.toolhold import image_tool_usage
from azure_openai_proxy.governance.estimate import (
    DEFAULT_COMPLETION_TOKENS,
    unanswered_usage,
    with_context,
)
from azure_openai_proxy.governance.toolusage import IMAGE_DEPLOYMENT_HEADER
from azure_openai_proxy.observability.record import RequestRecord

__all__ = ["note_unanswered"]


def note_unanswered(record: RequestRecord, body: Mapping[str, Any] | None,
                    operation: str, default_completion: int = DEFAULT_COMPLETION_TOKENS,
                    form: RequestBody | None = None,
                    headers: Mapping[str, str] | None = None) -> None:
    """A request that ended without an answer's usage after it was sent (the client left
    before the first byte, the upstream timed out): Azure may bill it, so it is recorded
    with an estimate (flagged) rather than as free, the context its chained turn made
    Azure read included (`record.context_tokens`). One never handed whole to a socket
    (`record.body_sent`: its client left while it waited for a connection, an upload
    cut short by a reset: Azure acts on, and bills, no part of a request) is not. A unit-
    priced one (pictures, speech, a transcription) is estimated in its units, whatever
    its key (a budget's hold is not needed): a form's fields and its files' first bytes
    read from `form` here (`read_form`), on this path only, so that an answered request
    never pays for them; a form that cannot be read, as the most it could ask. A
    Responses request's hosted image tool (`headers` name its deployment) adds the
    pictures its hold counts (`_with_image_tool`)."""
    if record.usage is None and record.body_sent and (
            record.upstream_ms is None or 200 <= record.status < 300):
        if operation in UNIT_PRICED:
            if body is None and form is not None:
                read = read_form(form, operation)
                record.usage = unanswered_usage(
                    read.fields, operation, False, audio_seconds=read.audio_seconds,
                    picture_sizes=read.picture_sizes, form_bytes=read.size)
            else:
                record.usage = unanswered_usage(body, operation, False)
            return
        usage = unanswered_usage(body, operation, record.stream, default_completion)
        if operation == "responses" and body and not record.stream:
            usage = _with_image_tool(usage, body, headers)
        record.usage = with_context(usage, record.context_tokens)


def _with_image_tool(usage: dict[str, Any] | None, body: Mapping[str, Any],
                     headers: Mapping[str, str] | None) -> dict[str, Any] | None:
    """`usage` with the hosted image tool's part (`image_tool_usage`'s best estimate:
    one picture and its prompt), flagged estimated, priced at the image
    deployment's model as an answer's is (ledgerrows.py `record_cost`). Non-streamed
    only, as the text's answer is: Azure finishes those; a stream it stops. None without
    the header: Azure refuses a request whose tool names no deployment (400 "imagegen
    deployment must be provided through header"), billing nothing of it."""
    prompt = usage["prompt_tokens"] if usage is not None else 0
    tool = image_tool_usage(body, prompt, held=False)
    if tool is None:
        return usage
    if headers is None or not headers.get(IMAGE_DEPLOYMENT_HEADER):
        return None
    return with_image_gen(usage, {**tool, "estimated": True}, headers)
