"""The resend rule with plain data: when a failed attempt may go to another deployment."""

from __future__ import annotations

import pytest

from azure_openai_proxy.balancing.resend import may_try_elsewhere
from azure_openai_proxy.errors import (
    EntraUnavailable,
    UpstreamError,
    UpstreamPoolTimeout,
    UpstreamTimeout,
    UpstreamUnreachable,
)

# (method, status or None for no answer, request_sent) -> may it be sent again?
TABLE = [
    # Nothing was written: always.
    ("POST", None, False, True),
    ("PATCH", None, False, True),
    ("GET", None, False, True),
    # A POST that may have reached Azure: only when the status proves it was not run.
    ("POST", 429, True, True),
    ("POST", 503, True, True),
    ("POST", 500, True, False),
    ("POST", 502, True, False),
    ("POST", 504, True, False),
    ("POST", None, True, False),  # reset or read timeout after sending
    ("PATCH", None, True, False),
    ("PATCH", 500, True, False),
    # Idempotent methods: always.
    ("GET", None, True, True),
    ("GET", 500, True, True),
    ("HEAD", 502, True, True),
    ("OPTIONS", None, True, True),
    ("DELETE", 504, True, True),
    ("PUT", None, True, True),
]


@pytest.mark.parametrize(("method", "status", "sent", "expected"), TABLE)
def test_the_resend_rule(method: str, status: int | None, sent: bool, expected: bool) -> None:
    assert may_try_elsewhere(method, status, sent) is expected


def test_upstream_errors_say_whether_the_request_was_sent() -> None:
    assert UpstreamError("x").request_sent is True  # unknown: assume it was
    assert UpstreamUnreachable("x", request_sent=False).request_sent is False
    assert UpstreamTimeout("x").request_sent is True
    assert UpstreamPoolTimeout("x").request_sent is False
    assert EntraUnavailable("x").request_sent is False


def test_a_pool_timeout_renders_503_with_retry_after() -> None:
    error = UpstreamPoolTimeout("busy")
    assert error.http_status == 503
    assert error.headers()["retry-after"] == "1"
    assert error.body()["error"]["code"] == "upstream_pool_timeout"
