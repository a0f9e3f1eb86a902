from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.errors import UpstreamHttpError
from azure_openai_proxy.normalize.upstream_errors import is_retryable, translate_upstream_error

# Bodies exactly as the wire reference records them.
FILTER_RESULT = {
    "hate": {"filtered": True, "severity": "high"},
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}
CONTENT_FILTER = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": FILTER_RESULT,
        },
    }
}
BAD_KEY = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
        "to provide a valid key for an active subscription and use a correct regional API endpoint "
        "for your resource.",
    }
}
BAD_TOKEN = {
    "statusCode": 401,
    "message": "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired.",
}
NO_ROLE = {
    "error": {
        "code": "PermissionDenied",
        "message": "Principal does not have access to API/Operation.",
    }
}
RATE_LIMIT = {
    "error": {
        "code": "429",
        "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
        "version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing "
        "tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease "
        "if you would like to further increase the default rate limit.",
    }
}
UNRECOGNIZED = {
    "error": {
        "message": "Unrecognized request argument supplied: stream_options",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
UNRECOGNIZED_PLURAL = {
    "error": {
        "message": "Unrecognized request arguments supplied: parallel_tool_calls, stream_options",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
UNKNOWN = {
    "error": {
        "message": "Unknown parameter: 'stream_options'.",
        "type": "invalid_request_error",
        "param": "stream_options",
        "code": "unknown_parameter",
    }
}
UNSUPPORTED = {
    "error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
        "'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
}
RESOURCE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
DEPLOYMENT_NOT_FOUND = {
    "error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the "
        "deployment within the last 5 minutes, please wait a moment and try again.",
    }
}
OPERATION_NOT_SUPPORTED = {
    "error": {
        "code": "OperationNotSupported",
        "message": "The embeddings operation does not work with the specified model, gpt-4o. "
        "Please choose different model and try again.",
    }
}
REASONING_OLD_VERSION = {
    "error": {
        "code": "BadRequest",
        "message": "Model o1 is enabled only for api versions 2024-12-01-preview and later",
    }
}
V1_DATED_VERSION = {"error": {"code": "BadRequest", "message": "API version not supported"}}
SERVER_ERROR = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


def translate(status: int, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> UpstreamHttpError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    kw.setdefault("client_model", "gpt-4o")
    kw.setdefault("deployment", "prod-gpt4o-eastus")
    return translate_upstream_error(status, headers or {}, raw, **kw)


def error_of(exc: UpstreamHttpError) -> dict[str, Any]:
    body = orjson.loads(exc.render())
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


def test_content_filter_keeps_the_categories_under_documented_fields() -> None:
    exc = translate(400, CONTENT_FILTER)
    error = error_of(exc)
    assert exc.http_status == 400
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "content_filter",
        "prompt",
    )
    assert error["content_filter_result"] == FILTER_RESULT
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert "content management policy" in error["message"]
    assert "status" not in error


def test_image_content_filter_code_is_recognised() -> None:
    body = {
        "error": {
            "code": "contentFilter",
            "message": "Your task failed as a result of our safety system.",
        }
    }
    assert error_of(translate(400, body))["code"] == "content_filter"


def test_deployment_not_found_names_the_clients_model_not_the_deployment() -> None:
    exc = translate(404, DEPLOYMENT_NOT_FOUND)
    error = error_of(exc)
    assert exc.http_status == 404
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "model_not_found",
        "model",
    )
    assert "`gpt-4o`" in error["message"]
    assert "prod-gpt4o-eastus" not in error["message"]


def test_foundrys_unknown_model_is_model_not_found_too() -> None:
    message = "Unknown model: prod-llama-eastus"
    exc = translate(404, {"error": {"code": "unknown_model", "message": message,
                                    "details": message}}, client_model="llama")
    error = error_of(exc)
    assert exc.http_status == 404
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "`llama`" in error["message"] and "prod-llama-eastus" not in error["message"]


def test_deployment_not_found_without_a_client_model() -> None:
    assert "model requested" in error_of(translate(404, DEPLOYMENT_NOT_FOUND, client_model=None))["message"]


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (401, BAD_KEY, "upstream_authentication_failed"),
        (401, BAD_TOKEN, "upstream_authentication_failed"),
        (401, NO_ROLE, "upstream_permission_denied"),
        (
            403,
            {"error": {"code": "Forbidden", "message": "Public access is disabled."}},
            "upstream_permission_denied",
        ),
    ],
)
def test_gateway_credentials_rejected_is_a_502_saying_so(status: int, body: Any, code: str) -> None:
    exc = translate(status, body)
    error = error_of(exc)
    assert exc.http_status == 502
    assert (error["type"], error["code"]) == ("upstream_error", code)
    assert "Your own API key was accepted" in error["message"]
    assert exc.headers()["x-should-retry"] == "false"


def test_the_entra_message_is_passed_on() -> None:
    assert "Access token is missing" in error_of(translate(401, BAD_TOKEN))["message"]


def test_clients_own_rejected_key_stays_401_on_passthrough() -> None:
    exc = translate(401, BAD_KEY, client_credentials=True)
    assert exc.http_status == 401
    assert error_of(exc)["code"] == "invalid_api_key"
    assert "x-should-retry" not in exc.headers()
    denied = translate(401, NO_ROLE, client_credentials=True)
    assert denied.http_status == 403 and error_of(denied)["code"] == "permission_denied"


def test_keys_and_tokens_never_reach_the_message() -> None:
    key = "0123456789abcdef0123456789abcdef"
    body = {
        "error": {
            "code": "401",
            "message": f"Key {key} invalid; got Bearer eyJhbGciOi.JIUzI1NiJ9.sig",
        }
    }
    message = error_of(translate(401, body))["message"]
    assert key not in message and "eyJhbGciOi" not in message
    assert "[redacted]" in message


def test_rate_limit_carries_retry_headers() -> None:
    headers = {
        "Retry-After": "6",
        "retry-after-ms": "5800",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6s",
        "apim-request-id": "c0ffee00-1111-2222-3333-444455556666",
        "content-length": "321",
        "api-key": "must-not-be-carried",
    }
    exc = translate(429, RATE_LIMIT, headers)
    error = error_of(exc)
    assert exc.http_status == 429
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert "retry after 6 seconds" in error["message"]
    assert exc.headers() == {
        "retry-after": "6",
        "retry-after-ms": "5800",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6s",
        "apim-request-id": "c0ffee00-1111-2222-3333-444455556666",
    }


def test_rate_limit_without_headers_takes_retry_after_from_the_message() -> None:
    exc = translate(429, RATE_LIMIT)
    assert exc.headers() == {"retry-after": "6"}


def test_request_rate_limit_is_type_requests() -> None:
    body = {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 3 seconds."}
    exc = translate(429, body)
    assert error_of(exc)["type"] == "requests" and error_of(exc)["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (UNRECOGNIZED, "stream_options"),
        (UNRECOGNIZED_PLURAL, "parallel_tool_calls"),
        (UNKNOWN, "stream_options"),
    ],
)
def test_unknown_parameter_both_shapes_set_param(body: Any, param: str) -> None:
    exc = translate(400, body)
    error = error_of(exc)
    assert exc.http_status == 400
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        param,
        "unknown_parameter",
    )
    assert error["message"] == body["error"]["message"]


def test_unsupported_parameter_passes_through_in_openai_shape() -> None:
    error = error_of(translate(400, UNSUPPORTED))
    assert (error["param"], error["code"]) == ("max_tokens", "unsupported_parameter")


def test_resource_not_found_says_what_is_probably_wrong() -> None:
    exc = translate(404, RESOURCE_NOT_FOUND)
    error = error_of(exc)
    assert exc.http_status == 404
    assert (error["type"], error["code"]) == ("invalid_request_error", "not_found")
    assert "api-version" in error["message"] and "Resource not found" in error["message"]


def test_operation_not_supported_is_400() -> None:
    exc = translate(400, OPERATION_NOT_SUPPORTED)
    error = error_of(exc)
    assert exc.http_status == 400 and error["code"] == "operation_not_supported"
    assert "embeddings operation" in error["message"]


@pytest.mark.parametrize("body", [REASONING_OLD_VERSION, V1_DATED_VERSION])
def test_other_bad_requests_keep_azures_message_and_code(body: Any) -> None:
    exc = translate(400, body)
    error = error_of(exc)
    assert exc.http_status == 400
    assert (error["type"], error["code"], error["message"]) == (
        "invalid_request_error",
        "BadRequest",
        body["error"]["message"],
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_keep_their_status(status: int) -> None:
    exc = translate(status, SERVER_ERROR)
    error = error_of(exc)
    assert exc.http_status == status
    assert (error["type"], error["code"]) == ("server_error", None)
    assert error["message"] == SERVER_ERROR["error"]["message"]


def test_azure_internal_error_code_is_kept() -> None:
    body = {"error": {"code": "InternalServerError", "message": "Backend returned unexpected response."}}
    assert error_of(translate(500, body))["code"] == "InternalServerError"


def test_non_json_body_gives_a_snippet() -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>" + b"x" * 500
    exc = translate(502, html)
    error = error_of(exc)
    assert exc.http_status == 502 and error["type"] == "server_error"
    assert "<title>502 Bad Gateway</title>" in error["message"]
    assert len(error["message"]) < 320


@pytest.mark.parametrize("body", [b"", b"   ", b"null", b"[]", b"\xff\xfe"])
def test_empty_or_odd_bodies_still_translate(body: bytes) -> None:
    exc = translate(503, body)
    assert exc.http_status == 503
    assert "503" in error_of(exc)["message"]


def test_non_json_400_is_an_invalid_request() -> None:
    error = error_of(translate(400, b"Bad Request"))
    assert error["type"] == "invalid_request_error" and "Bad Request" in error["message"]


def test_error_as_plain_string() -> None:
    assert error_of(translate(400, {"error": "nope"}))["message"] == "nope"


def test_retryable_statuses() -> None:
    assert [s for s in (400, 401, 403, 404, 408, 429, 500, 501, 502, 503, 504) if is_retryable(s)] == [
        429,
        500,
        502,
        503,
        504,
    ]


@given(st.integers(min_value=400, max_value=599), st.binary(max_size=300))
def test_never_raises_and_always_renders_openais_shape(status: int, body: bytes) -> None:
    exc = translate(status, body)
    error_of(exc)
    assert 400 <= exc.http_status <= 599


_fields = st.dictionaries(
    st.sampled_from(["message", "code", "param", "type", "innererror", "statusCode"]),
    st.one_of(
        st.none(),
        st.text(max_size=20),
        st.integers(-(2**62), 2**62),
        st.dictionaries(st.text(max_size=3), st.none()),
    ),
)


@given(st.integers(min_value=400, max_value=599), _fields, st.booleans())
def test_any_error_object_translates(status: int, fields: dict[str, Any], wrapped: bool) -> None:
    error_of(translate(status, {"error": fields} if wrapped else fields))
