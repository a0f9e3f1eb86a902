"""Azure's error replies, each one an exception that knows its status, body and headers.

One class, `AzureError`, carries the reply; the functions below build the shapes the
service really sends (see the wire reference, sections 2, 3 and 5):

    AzureError
      401  missing_key()            {"statusCode":401,"message":"Access denied due to missing ..."}
      401  invalid_key()            {"error":{"code":"401","message":"Access denied ..."}}
      401  invalid_token()          {"statusCode":401,"message":"Unauthorized. ..."}
      404  resource_not_found()     missing/unknown api-version, unknown path or method
      404  deployment_not_found()   DeploymentNotFound
      400  bad_request(message)     {"error":{"code":"BadRequest","message":...}}
      400  operation_not_supported(kind, operation)
      400  invalid_request(message, param, code)   OpenAI-shaped (type invalid_request_error)
      400  prompt_filtered()        content_filter with innererror
      404  not_found_object(kind, id)
      413  payload_too_large(limit)
      429  rate_limited(operation, api_version, seconds)
      500  server_error(request_id) / 503 service_unavailable()
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_INVALID_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)
# A request with neither `api-key` nor `Authorization`: the gateway in front of the
# service answers in its own `statusCode` shape (openai/openai-python#1527,
# continuedev/continue#4601), not the `{"error": ...}` of a wrong key.
_MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
_INVALID_TOKEN = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment "
    "within the last 5 minutes, please wait a moment and try again."
)
_PROMPT_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content "
    "management policy. Please modify your prompt and retry. To learn more about our "
    "content filtering policies please read our documentation: "
    "https://go.microsoft.com/fwlink/?linkid=2198766"
)
_SERVER_ERROR = (
    "The server had an error processing your request. Sorry about that! You can retry your "
    "request, or contact us through an Azure support request at: "
    "https://go.microsoft.com/fwlink/?linkid=2213926 if you keep seeing this error. "
    "(Please include the request ID {rid} in your email.)"
)


class AzureError(Exception):
    """An error reply: raise it anywhere in a handler and the app answers with it."""

    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers: Mapping[str, str] = headers or {}


def _coded(status: int, code: str, message: str) -> AzureError:
    return AzureError(status, {"error": {"code": code, "message": message}})


def invalid_key() -> AzureError:
    return _coded(401, "401", _INVALID_KEY)


def missing_key() -> AzureError:
    return AzureError(401, {"statusCode": 401, "message": _MISSING_KEY})


def invalid_token() -> AzureError:
    return AzureError(401, {"statusCode": 401, "message": _INVALID_TOKEN})


def resource_not_found() -> AzureError:
    return _coded(404, "404", "Resource not found")


def deployment_not_found() -> AzureError:
    return _coded(404, "DeploymentNotFound", _DEPLOYMENT_NOT_FOUND)


def bad_request(message: str) -> AzureError:
    return _coded(400, "BadRequest", message)


def operation_not_supported(kind: str, operation: str) -> AzureError:
    return _coded(
        400,
        "OperationNotSupported",
        f"The {operation} operation does not work with the specified model, {kind}. "
        "Please choose different model and try again. You can learn more about which "
        "models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.",
    )


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> AzureError:
    return AzureError(
        400,
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        },
    )


def not_found_object(kind: str, object_id: str) -> AzureError:
    return AzureError(
        404,
        {
            "error": {
                "message": f"{kind} with id '{object_id}' not found.",
                "type": "invalid_request_error",
                "param": None,
                "code": "404",
            }
        },
    )


def filter_verdict(category: str, severity: str = "high") -> dict[str, Any]:
    """Content-filter results where `category` tripped and the others are safe."""
    results: dict[str, Any] = {
        name: {"filtered": False, "severity": "safe"}
        for name in ("hate", "self_harm", "sexual", "violence")
    }
    results[category] = {"filtered": True, "severity": severity}
    results["jailbreak"] = {"filtered": False, "detected": False}
    return results


def prompt_filtered() -> AzureError:
    return AzureError(
        400,
        {
            "error": {
                "message": _PROMPT_FILTERED,
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": filter_verdict("hate"),
                },
            }
        },
    )


def payload_too_large(limit: int) -> AzureError:
    return _coded(
        413,
        "RequestEntityTooLarge",
        f"The request body is too large. The maximum size is {limit} bytes.",
    )


def rate_limited(
    operation: str, api_version: str, seconds: float, limit: str = "token"
) -> AzureError:
    """429 saying truthfully when to come back; headers in seconds (ceil) and ms.
    `limit` is "token" (TPM) or "call" (RPM), as Azure words it."""
    whole = max(1, math.ceil(seconds))
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
        f"have exceeded {limit} rate limit of your current OpenAI S0 pricing tier. Please retry "
        f"after {whole} second{'s' if whole != 1 else ''}. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default "
        "rate limit."
    )
    headers = {"retry-after": str(whole), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}
    return AzureError(429, {"error": {"code": "429", "message": message}}, headers)


def server_error(request_id: str) -> AzureError:
    return AzureError(
        500,
        {
            "error": {
                "message": _SERVER_ERROR.format(rid=request_id),
                "type": "server_error",
                "param": None,
                "code": None,
            }
        },
    )


def service_unavailable() -> AzureError:
    return _coded(
        503,
        "ServiceUnavailable",
        "The service is temporarily unable to process your request. Please try again later.",
    )
