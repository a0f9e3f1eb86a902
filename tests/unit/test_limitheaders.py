"""A virtual key's x-ratelimit-* headers replace Azure's on whole answers and on the
errors Azure answered."""

from __future__ import annotations

from azure_openai_proxy.errors import UpstreamHttpError, UpstreamTimeout
from azure_openai_proxy.gateway.limitheaders import apply_to, limit_error
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter
from azure_openai_proxy.http.interface import Answer

OURS = {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4"}


def test_azures_limits_in_any_case_are_replaced_by_the_keys() -> None:
    answer = Answer(200, {"content-type": "application/json",
                          "X-RateLimit-Remaining-Tokens": "90000",
                          "x-ratelimit-limit-requests": "600", "apim-request-id": "r"}, b"{}")
    apply_to(answer, OURS)
    assert list(answer.headers.items()) == [
        ("content-type", "application/json"), ("apim-request-id", "r"), *OURS.items()]


def test_an_answer_without_azures_limits_gets_the_keys_added_in_place() -> None:
    headers = {"content-type": "application/json", "x-ratelimited": "no", "x-ms-region": "r"}
    answer = Answer(200, headers, b"{}")
    apply_to(answer, OURS)
    assert answer.headers is headers  # not copied: the answer owns its headers
    assert headers == {"content-type": "application/json", "x-ratelimited": "no",
                       "x-ms-region": "r", **OURS}


def test_an_error_azure_answered_carries_the_keys_limits_not_azures() -> None:
    """Raised (`UpstreamHttpError`), it never reaches `apply_lines`: Azure's limits are
    the shared deployment's quota. Its retry headers stay; other errors are untouched."""
    limiter = RateLimiter(lambda: 100.0)
    admitted = limiter.take(limiter.plan("k", Limits(rpm=5, tpm=1000), None, None), 10)
    assert isinstance(admitted, Admission)
    error = UpstreamHttpError(429, {"error": {"message": "slow down"}}, {
        "retry-after": "6", "retry-after-ms": "5800", "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-limit-requests": "6000", "apim-request-id": "r"})
    limit_error(error, admitted.head_lines)
    assert error.headers() == {"retry-after": "6", "retry-after-ms": "5800",
                               "apim-request-id": "r", **admitted.headers}
    assert error.headers()["x-ratelimit-limit-requests"] == "5"
    timeout = UpstreamTimeout("no answer")
    limit_error(timeout, admitted.head_lines)
    assert timeout.headers() == {}
