"""The usage of a request sent and never answered (its client left before the answer,
Azure timed out): Azure may bill it, so it is recorded with an estimate, flagged, rather
than as free. Read only on that path: an answered request never pays for it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from azure_openai_proxy.errors import GatewayError
from azure_openai_proxy.gateway.formmedia import HeldForm
from azure_openai_proxy.gateway.ledgerrows import UNIT_PRICED
from azure_openai_proxy.governance.estimate import (
    DEFAULT_COMPLETION_TOKENS,
    unanswered_usage,
    with_context,
)
from azure_openai_proxy.observability.record import RequestRecord

__all__ = ["note_unanswered"]

_TRANSCRIBING = frozenset({"audio/transcriptions", "audio/translations"})


def note_unanswered(record: RequestRecord, body: Mapping[str, Any] | None,
                    operation: str, default_completion: int = DEFAULT_COMPLETION_TOKENS,
                    form: Callable[[str], Mapping[str, Any] | None] | None = None) -> None:
    """A request that ended without an answer's usage after it was sent (the client left
    before the first byte, the upstream timed out): Azure may bill it, so it is recorded
    with an estimate (flagged) rather than as free, the context its chained turn made
    Azure read included (`record.context_tokens`). One never handed whole to a socket
    (`record.body_sent`: its client left while it waited for a connection, an upload
    cut short by a reset: Azure acts on, and bills, no part of a request) is not. A unit-
    priced one (pictures, speech, a transcription) is estimated in its units, whatever
    its key (a budget's hold is not needed): a form's fields from `form` (`RequestBody.
    held_fields`), and its files' first bytes (`HeldForm`) read here, on this path only,
    so that an answered request never pays for them."""
    if record.usage is None and record.body_sent and (
            record.upstream_ms is None or 200 <= record.status < 300):
        if operation in UNIT_PRICED:
            record.usage = _unanswered_units(body, operation, form)
            return
        record.usage = with_context(
            unanswered_usage(body, operation, record.stream, default_completion),
            record.context_tokens)


def _unanswered_units(body: Mapping[str, Any] | None, operation: str,
                      form: Callable[[str], Mapping[str, Any] | None] | None,
                      ) -> dict[str, Any] | None:
    """`unanswered_usage` of a unit-priced request, its form's files read for it."""
    if body is None and form is not None:
        try:
            body = form(operation)
        except (GatewayError, OSError):  # a form it cannot read: its units unknown
            body = None
    seconds = sizes = None
    if isinstance(body, HeldForm):
        try:
            if operation in _TRANSCRIBING:
                seconds = body.audio_length()
            elif operation == "images/edits":
                sizes = body.picture_sizes()
        except OSError:  # the spool is gone: the units the fields say, no more
            pass
    return unanswered_usage(body, operation, False, audio_seconds=seconds,
                            picture_sizes=sizes)
