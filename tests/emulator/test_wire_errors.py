from __future__ import annotations

from azure_openai_proxy.emulator import wire_errors


def test_invalid_key_body_is_azures() -> None:
    error = wire_errors.invalid_key()
    assert error.status == 401
    assert error.body["error"]["code"] == "401"
    assert error.body["error"]["message"].startswith("Access denied due to invalid subscription key")


def test_invalid_token_body_has_no_error_wrapper() -> None:
    error = wire_errors.invalid_token()
    assert error.status == 401
    assert error.body["statusCode"] == 401
    assert "Access token is missing, invalid" in error.body["message"]


def test_prompt_filtered_has_innererror_with_singular_result() -> None:
    body = wire_errors.prompt_filtered().body["error"]
    assert body["code"] == "content_filter" and body["param"] == "prompt" and body["status"] == 400
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body["innererror"]["content_filter_result"]["hate"] == {
        "filtered": True, "severity": "high"
    }


def test_rate_limited_rounds_seconds_up_and_keeps_milliseconds() -> None:
    error = wire_errors.rate_limited("ChatCompletions_Create", "2024-10-21", 1.2)
    assert error.status == 429
    assert error.headers == {"retry-after": "2", "retry-after-ms": "1200"}
    assert "Please retry after 2 seconds" in error.body["error"]["message"]
    assert "API version 2024-10-21" in error.body["error"]["message"]


def test_server_error_names_the_request() -> None:
    error = wire_errors.server_error("abc-123")
    assert error.status == 500
    assert "abc-123" in error.body["error"]["message"]
    assert error.body["error"]["type"] == "server_error"
