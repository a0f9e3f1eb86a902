"""Azure OpenAI error answers, translated once into OpenAI's shape and status.

`translate_upstream_error` turns any error status Azure answered (every body shape of the
wire reference: `{"error": {...}}` old and new, Entra's `{"statusCode", "message"}`,
non-JSON and empty bodies) into an `UpstreamHttpError` whose body is OpenAI's
`{"error": {"message", "type", "param", "code"}}`:

    content filter           400 invalid_request_error content_filter, param "prompt";
                             extra `error.content_filter_result` (the categories) and
                             `error.innererror` (Azure's, as sent)
    DeploymentNotFound       404 invalid_request_error model_not_found, the client's model
    unknown_model (Foundry)  the same: a Foundry resource without that deployment
    401/403, PermissionDenied
      gateway's credentials  502 upstream_error (+ x-should-retry: false): the client's
                             key was accepted; the gateway's Azure key or role is wrong
      client's own key       401/403 invalid_api_key / permission_denied (passthrough)
    429                      429 rate_limit_exceeded, type "tokens" or "requests"
    unknown parameter        400 invalid_request_error unknown_parameter, `param` set
                             (Foundry's `{"detail": "Extra parameters ['top_k'] ..."}` too)
    Foundry's 422            same status, its `details` (what, where) in the message,
                             the first one's place as `param` (or its parameter_not_supported
                             `detail`'s place)
    404 Resource not found   404 invalid_request_error not_found (api-version or path)
    OperationNotSupported    400 invalid_request_error operation_not_supported
    other 4xx                same status, invalid_request_error, Azure's message/code
    5xx                      same status, server_error

Rate-limit and request-id headers (`retry-after`, `retry-after-ms`, `x-ratelimit-*`,
`x-should-retry`, `apim-request-id`, `x-request-id`, `x-ms-region`) are carried to the
client. Messages never carry a credential: anything shaped like a key or bearer token
is redacted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.errors import UpstreamHttpError, error_body

__all__ = ["RETRYABLE_STATUSES", "is_retryable", "translate_upstream_error"]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_CARRIED_HEADERS = frozenset(
    {
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
        "apim-request-id",
        "x-request-id",
        "x-ms-region",
    }
)
_SNIPPET = 200
_DETAILS = 3  # a 422's validation errors named in the message
_UNRECOGNIZED = re.compile(r"Unrecognized request arguments? supplied: ([^\s,.]+)")
_UNKNOWN = re.compile(r"Unknown parameter: '([^']+)'")
_EXTRA = re.compile(r"Extra parameters \['([^']+)'")  # Foundry's {"detail": ...} 400
_RETRY_AFTER = re.compile(r"retry after (\d+) seconds?", re.IGNORECASE)
_SECRET = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}|\b[0-9a-f]{32}\b|\b[A-Za-z0-9]{84}\b")


def is_retryable(status: int) -> bool:
    """Whether another attempt (later, or on another deployment) may succeed."""
    return status in RETRYABLE_STATUSES


@dataclass(frozen=True, slots=True)
class _AzureError:
    """What an Azure error body said, whatever its shape."""

    status: int
    message: str | None
    code: str | None
    param: str | None
    type: str | None
    innererror: dict[str, Any] | None
    snippet: str  # the body, shortened, for non-JSON answers


def translate_upstream_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    client_model: str | None,
    deployment: str | None,
    client_credentials: bool = False,
) -> UpstreamHttpError:
    """Translate Azure's error answer; `client_credentials`: the client's own key was sent.

    `deployment` is for the gateway's own logs; it is never put in the client's message.
    """
    azure = _parse(status, body)
    translated_status, error = _translate(azure, client_model, client_credentials)
    carried = _carried_headers(headers, azure)
    if translated_status == 502:
        carried["x-should-retry"] = "false"
    error["message"] = _redact(error["message"])
    return UpstreamHttpError(translated_status, {"error": error}, carried)


def _parse(status: int, body: bytes) -> _AzureError:
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):  # {"error": "text"}
        error = {"message": error}
    if not isinstance(error, dict):
        # Entra ID and APIM: {"statusCode": 401, "message": "..."}
        error = data if isinstance(data, dict) else {}
    inner = error.get("innererror")
    message, param = _text(error.get("message") or error.get("detail")), _text(error.get("param"))
    details = _validation_details(error.get("details"))
    if details:  # Foundry's 422 "invalid input error": what was invalid, and where
        message = f"{message or 'invalid input'}: {'; '.join(text for text, _ in details)}"
        param = param or details[0][1]
    elif type(detail := error.get("detail")) is dict and (where := _body_path(detail.get("loc"))):
        # the model inference API's 422 parameter_not_supported: where (never its input)
        message, param = f"{message or 'invalid input'} ({where})", param or where
    return _AzureError(
        status=status,
        message=message,
        code=_text(error.get("code")),
        param=param,
        type=_text(error.get("type")),
        innererror=inner if isinstance(inner, dict) else None,
        snippet=" ".join(body[:_SNIPPET].decode("utf-8", "replace").split()),
    )


def _validation_details(details: Any) -> list[tuple[str, str | None]]:
    """Foundry's 422 `details` (pydantic's errors: `msg` and `loc`, such as `["body",
    "messages", 0, "role"]`), as (text, param) for the first few; never their `input`,
    which echoes the request (the whole prompt)."""
    if type(details) is not list:
        return []
    found: list[tuple[str, str | None]] = []
    for detail in details[:_DETAILS]:
        if type(detail) is not dict or type(detail.get("msg")) is not str:
            continue
        path = _body_path(detail.get("loc"))
        text = detail["msg"][:_SNIPPET]
        found.append((f"{text} ({path})" if path else text, path or None))
    return found


def _body_path(loc: Any) -> str:
    """A validation error's `loc` in the body (`["body", "messages", 0, "role"]`) as
    `messages.0.role`; "" for anything else."""
    if type(loc) is not list or loc[:1] != ["body"]:
        return ""
    return ".".join(str(part) for part in loc[1:] if type(part) in (str, int))


def _error(
    message: str, type_: str, code: str | None = None, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    error: dict[str, Any] = error_body(message, type_, code, param, **extra)["error"]
    return error


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _translate(
    azure: _AzureError, client_model: str | None, client_credentials: bool
) -> tuple[int, dict[str, Any]]:
    status, code = azure.status, azure.code
    inner_code = azure.innererror.get("code") if azure.innererror else None
    if code in ("content_filter", "contentFilter") or inner_code == "ResponsibleAIPolicyViolation":
        return 400, _content_filter(azure)
    if code in ("DeploymentNotFound", "unknown_model"):
        model = f"`{client_model}`" if client_model else "requested"
        return 404, _error(
            f"The model {model} does not exist or you do not have access to it (its Azure "
            "deployment was not found; one created in the last few minutes may not be "
            "ready yet).",
            "invalid_request_error",
            "model_not_found",
            "model",
        )
    if status in (401, 403) or code == "PermissionDenied":
        return _auth(azure, client_credentials)
    if status == 429:
        return 429, _rate_limited(azure)
    if code == "OperationNotSupported":
        return 400, _error(
            _message(azure), "invalid_request_error", "operation_not_supported", "model"
        )
    if status == 404:
        return 404, _not_found(azure, client_model)
    if status >= 500:
        return status, _error(_message(azure), "server_error", _code(code), azure.param)
    return status, _invalid_request(azure)


def _content_filter(azure: _AzureError) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if azure.innererror is not None:
        result = azure.innererror.get("content_filter_result")
        if result is not None:
            extra["content_filter_result"] = result
        extra["innererror"] = azure.innererror
    message = azure.message or (
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy."
    )
    return _error(
        message, "invalid_request_error", "content_filter", azure.param or "prompt", **extra
    )


def _auth(azure: _AzureError, client_credentials: bool) -> tuple[int, dict[str, Any]]:
    denied = azure.code == "PermissionDenied" or azure.status == 403
    said = f" Azure said: {azure.message}" if azure.message else ""
    if client_credentials:
        if denied:
            return 403, _error(
                f"Azure OpenAI refused your credentials access to this operation.{said}",
                "invalid_request_error",
                "permission_denied",
            )
        return 401, _error(
            f"Azure OpenAI rejected your API key or token.{said}",
            "invalid_request_error",
            "invalid_api_key",
        )
    what = (
        "its Azure identity lacks a role on the resource (e.g. Cognitive Services OpenAI User)"
        if denied
        else "its Azure API key or Entra ID token is wrong, expired, or for another resource"
    )
    return 502, _error(
        f"The gateway could not authenticate to Azure OpenAI (Azure answered "
        f"{azure.status}): {what}. Your own API key was accepted; the gateway's operator "
        f"must fix the deployment's credentials.{said}",
        "upstream_error",
        "upstream_permission_denied" if denied else "upstream_authentication_failed",
    )


def _rate_limited(azure: _AzureError) -> dict[str, Any]:
    message = azure.message or "Rate limit reached for this deployment. Please retry later."
    kind = "tokens" if "token" in message.lower() else "requests"
    if azure.code == "insufficient_quota" or azure.type == "insufficient_quota":
        kind = "insufficient_quota"
    code = "insufficient_quota" if kind == "insufficient_quota" else "rate_limit_exceeded"
    return _error(message, kind, code)


def _not_found(azure: _AzureError, client_model: str | None) -> dict[str, Any]:
    said = azure.message or azure.snippet or "empty body"
    target = f" for model `{client_model}`" if client_model else ""
    return _error(
        f"Azure OpenAI answered 404 ({said}){target}. This usually means the gateway's "
        "api-version is unknown to Azure or not valid for this operation, or the "
        "endpoint path is wrong.",
        "invalid_request_error",
        "not_found",
    )


def _invalid_request(azure: _AzureError) -> dict[str, Any]:
    message = _message(azure)
    param, code = azure.param, _code(azure.code)
    found = (_UNRECOGNIZED.search(message) or _UNKNOWN.search(message)
             or _EXTRA.search(message))
    if found is not None:
        param = param or found.group(1)
        code = code or "unknown_parameter"
    return _error(message, azure.type or "invalid_request_error", code, param)


def _message(azure: _AzureError) -> str:
    if azure.message:
        return azure.message
    if azure.snippet:
        return (
            f"Azure OpenAI answered {azure.status} with a body that is not an error "
            f"object: {azure.snippet}"
        )
    return f"Azure OpenAI answered {azure.status} with an empty body."


def _code(code: str | None) -> str | None:
    """Azure's code, except bare HTTP statuses ("400"), which OpenAI leaves null."""
    return None if code is None or code.isdigit() else code


def _carried_headers(headers: Mapping[str, str], azure: _AzureError) -> dict[str, str]:
    carried = {
        name.lower(): value
        for name, value in headers.items()
        if name.lower() in _CARRIED_HEADERS or name.lower().startswith("x-ratelimit-")
    }
    if azure.status == 429 and "retry-after" not in carried and azure.message:
        hinted = _RETRY_AFTER.search(azure.message)
        if hinted is not None:
            carried["retry-after"] = hinted.group(1)
    return carried


def _redact(message: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or "") + "[redacted]", message)
