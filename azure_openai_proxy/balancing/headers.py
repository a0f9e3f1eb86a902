"""What Azure's response headers say about a deployment's quota. Pure.

`retry-after-ms` wins over `retry-after` (as the OpenAI SDK reads them); an HTTP-date
`retry-after` is not used by Azure and is ignored. `x-ratelimit-remaining-requests` and
`x-ratelimit-remaining-tokens` tell how much room the deployment has left.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["remaining_quota", "retry_after_seconds"]

_MAX_RETRY_AFTER = 86_400.0  # Azure's "no quota at all" answer
_INFINITY = float("inf")


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    # Not NaN, infinite (`inf`, `1e400`: no count, and int() of it raises) or negative.
    if not 0 <= number < _INFINITY:
        return None
    return number


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after`; None when neither parses."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return min(ms / 1000, _MAX_RETRY_AFTER)
    seconds = _number(headers.get("retry-after"))
    return None if seconds is None else min(seconds, _MAX_RETRY_AFTER)


def remaining_quota(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(remaining requests, remaining tokens), each None when absent or malformed."""
    requests = _number(headers.get("x-ratelimit-remaining-requests"))
    tokens = _number(headers.get("x-ratelimit-remaining-tokens"))
    return (
        None if requests is None else int(requests),
        None if tokens is None else int(tokens),
    )
