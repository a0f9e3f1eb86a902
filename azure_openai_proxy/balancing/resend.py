"""When a failed attempt may be sent again, to another deployment or the same one later.

A chat completion that ran twice is billed twice and may act twice (tools), so a request
is sent again only when the first upstream provably did not process it:

    nothing was written (connect error, DNS, pool wait timed out)     always
    an idempotent method (GET, HEAD, OPTIONS, DELETE, PUT, TRACE)     always
    anything else (POST, PATCH) that may have reached Azure           only on 429 or 503

Azure answers 429 (rate limit) and 503 (overloaded) before it runs the model. A read
timeout, a reset or a 500/502/504 after a POST was written proves nothing: the model may
be running, so the client gets that failure instead of a second, silent run.

Pure: plain values in, a bool out. The pipeline asks only about failures worth retrying
(a retryable status or an upstream error); the answer says whether it is *safe*.
"""

from __future__ import annotations

__all__ = ["IDEMPOTENT_METHODS", "NOT_PROCESSED_STATUSES", "may_try_elsewhere"]

# RFC 9110, 9.2.2: sending these twice has the effect of sending them once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT", "TRACE"})
# Statuses Azure answers without processing the request.
NOT_PROCESSED_STATUSES = frozenset({429, 503})


def may_try_elsewhere(method: str, status: int | None, request_sent: bool) -> bool:
    """Whether a failed attempt may be sent again. `status` is the failed attempt's
    answer (None: no answer, the connection failed or timed out); `request_sent` whether
    any byte of the request may have reached the upstream."""
    if not request_sent or method in IDEMPOTENT_METHODS:
        return True
    return status in NOT_PROCESSED_STATUSES
