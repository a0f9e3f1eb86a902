"""What is known about one request, and its token usage: the record the gateway fills in
as the request goes (`gateway/pipeline.py`, `gateway/attempts.py` and
`gateway/relay.py`) and every observer
reads when it ends (the access log, the metrics).

Usage is accounted here: `usage_of` reads it from a JSON answer, the stream normalizer
(`normalize/stream.py`) from Azure's usage frame, and `RequestRecord.tokens()` is the one
reading of its counts, whatever the API (chat's prompt/completion or Responses'
input/output).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["RequestRecord", "usage_of"]


@dataclass(slots=True)
class RequestRecord:
    """What the log line (and the metrics) say about one request; filled in as it goes."""

    request_id: str
    method: str
    route: str = "-"
    model: str | None = None
    deployment: str | None = None
    endpoint: str | None = None  # the deployment's endpoint (metrics label; not logged)
    status: int = 0
    attempts: int = 0
    # Times the request's bytes were handed to a socket, counted by the transport (the
    # record is its `UpstreamRequest.mark`), since the last error answer moved on from
    # (gateway/attempts.py); 0: Azure never saw it (its client left while it waited for
    # a connection, the connect failed), or only refused it: nothing to estimate.
    sent: int = 0
    # Likewise, of the times its whole body was (`SentMark.body_sent`): what an
    # unanswered request is estimated by (gateway/unanswered.py `note_unanswered`).
    body_sent: int = 0
    upstream_ms: float | None = None
    total_ms: float = 0.0
    azure_request_id: str | None = None
    usage: dict[str, Any] | None = None
    stream: bool = False
    adaptations: tuple[str, ...] = ()
    error: str | None = None
    retries: list[str] = field(default_factory=list)
    created_id: str | None = None  # an object Azure created (resource affinity; not logged)
    # Handed the ids a stream creates as they pass (a virtual key's: gateway/ownership.py)
    claim: Callable[[list[str]], None] | None = None
    key_id: str | None = None  # the virtual key that called (governance), never its secret
    team_id: str | None = None
    # The context tokens a chained Responses turn or compaction made Azure read again
    # (gateway/chained.py, counted): part of the prompt of an estimated usage.
    context_tokens: int = 0
    # A Responses stream's event sequence numbers (gateway/rereads.py): before a resumed
    # stream is relayed, the last text delta an earlier stream of its response counted
    # (its replay is not counted again); after a stream, the last one it counted.
    sequence: int = -1

    def tokens(self) -> tuple[int | None, int | None]:
        """(prompt or input tokens, completion or output tokens) from the usage, each
        None when Azure did not say."""
        usage = self.usage
        if not usage:
            return None, None
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        return (prompt if isinstance(prompt, int) else None,
                completion if isinstance(completion, int) else None)

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "model": self.model,
            "deployment": self.deployment,
            "status": self.status,
            "attempts": self.attempts,
            "upstream_ms": None if self.upstream_ms is None else round(self.upstream_ms, 2),
            "total_ms": round(self.total_ms, 2),
            "stream": self.stream,
        }
        if self.azure_request_id:
            line["azure_request_id"] = self.azure_request_id
        usage = self.usage
        if usage:
            # Only the token counts (Azure's `*_details` objects would double a line);
            # usually they are all there is, and the dict is logged as it is.
            line["usage"] = usage if _USAGE_KEY_SET.issuperset(usage) else {
                k: usage[k] for k in _USAGE_KEYS if k in usage
            }
        if self.adaptations:
            line["adapted"] = list(self.adaptations)
        if self.retries:
            line["retries"] = self.retries
        if self.error:
            line["error"] = self.error
        return line


_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "input_tokens", "output_tokens")
_USAGE_KEY_SET = frozenset(_USAGE_KEYS)


def usage_of(raw: bytes) -> dict[str, Any] | None:
    """The `usage` object of a JSON answer, or None."""
    try:
        usage = orjson.loads(raw).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None
