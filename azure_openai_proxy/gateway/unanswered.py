"""The usage of a request sent and never answered (its client left before the answer,
Azure timed out): Azure may bill it, so it is recorded with an estimate, flagged, rather
than as free. Read only on that path: an answered request never pays for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure_openai_proxy.gateway.formestimate import read_form
from azure_openai_proxy.gateway.ledgerrows import UNIT_PRICED
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.governance.estimate import (
    DEFAULT_COMPLETION_TOKENS,
    unanswered_usage,
    with_context,
)
from azure_openai_proxy.observability.record import RequestRecord

__all__ = ["note_unanswered"]


def note_unanswered(record: RequestRecord, body: Mapping[str, Any] | None,
                    operation: str, default_completion: int = DEFAULT_COMPLETION_TOKENS,
                    form: RequestBody | None = None) -> None:
    """A request that ended without an answer's usage after it was sent (the client left
    before the first byte, the upstream timed out): Azure may bill it, so it is recorded
    with an estimate (flagged) rather than as free, the context its chained turn made
    Azure read included (`record.context_tokens`). One never handed whole to a socket
    (`record.body_sent`: its client left while it waited for a connection, an upload
    cut short by a reset: Azure acts on, and bills, no part of a request) is not. A unit-
    priced one (pictures, speech, a transcription) is estimated in its units, whatever
    its key (a budget's hold is not needed): a form's fields and its files' first bytes
    read from `form` here (`read_form`), on this path only, so that an answered request
    never pays for them; a form that cannot be read, as the most it could ask."""
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
        record.usage = with_context(
            unanswered_usage(body, operation, record.stream, default_completion),
            record.context_tokens)
