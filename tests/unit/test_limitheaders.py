"""A virtual key's x-ratelimit-* headers replace Azure's on whole answers."""

from __future__ import annotations

from azure_openai_proxy.gateway.limitheaders import apply_to
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
