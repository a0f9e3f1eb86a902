"""One error tree; each error knows the reply it renders in OpenAI's error shape.

    GatewayError                      500 server_error (an unexpected failure: internal_error)
    ├── HttpRefused                   4xx/5xx: the HTTP engine refused the request itself
    ├── InvalidRequest                400 invalid_request_error
    │   ├── MalformedBody             400 (bad JSON, bad multipart, missing model)
    │   ├── UnsupportedParameter      400 (needs a newer api-version / other model)
    │   └── HostileInput              400 (client text that would change an upstream URL)
    ├── AuthenticationFailed          401 invalid_api_key
    ├── NotFound                      404
    │   ├── RouteNotFound             404 unknown_url
    │   ├── ModelNotFound             404 model_not_found
    │   └── ModelNotAllowed           404 model_not_found (a virtual key's allow-list)
    ├── MethodNotAllowed              405
    ├── RequestTimeout                408 (the request body stalled)
    ├── BodyTooLarge                  413
    ├── UnsupportedMediaType          415 (a Content-Encoding we do not decode)
    ├── RateLimited                   429 rate_limit_exceeded (carries retry-after)
    │   └── KeyRateLimited            429 a virtual key's or team's own limit (x-ratelimit-*)
    ├── AdminForbidden                403 the admin API with a key that is not the admin key
    ├── BudgetExhausted               429 insufficient_quota (x-should-retry: false)
    ├── ModelNotPriced                403 model_not_priced (a hard budget's model without a price)
    ├── AzureKeyRequired              403 azure_key_required (a virtual key on a passthrough
    │                                      deployment, which only the caller's Azure key opens)
    ├── DatabaseUnavailable           503 (the admin API's queries; never a proxied request)
    ├── OwnersUnavailable             503 service_unavailable (an object's owner not read in
    │                                      time for a restricted key: retry-after)
    ├── UpstreamHttpError             any status Azure answered, already in OpenAI's shape
    └── UpstreamError                 502 upstream_error (carries `request_sent`)
        ├── UpstreamUnreachable       502 (connect refused, DNS, reset before headers)
        ├── UpstreamTimeout           504
        ├── UpstreamHeadTooLarge      502 (Azure's answer head past the size/count limits)
        ├── UpstreamAnswerTooLarge    502 (a JSON answer past `upstream.max_answer_bytes`)
        ├── UpstreamEventTooLarge     502 (a stream's event past its limit: the stream ends)
        ├── UpstreamInvalidAnswer     502 (a 2xx JSON route's body not a JSON object, or in an
        │                                  encoding the gateway cannot decode)
        ├── UpstreamPoolTimeout       503 (no free connection within `upstream.pool_timeout`)
        ├── EntraUnavailable          502 (no Entra ID token for a deployment's scope)
        └── NoDeploymentAvailable     503 (every deployment cooling down / circuit open)

`UpstreamError.request_sent` says whether any byte of the request may have reached
Azure: False only when the failure provably came before the first write (connect
errors, DNS, a pool wait that timed out, no Entra token). Failover reads it
(`balancing/resend.py`): a POST that may have reached Azure is not sent again.

Errors are raised anywhere in the pipeline and rendered once, by `gateway/app.py`'s
`error_answer`, through `GatewayError.render()` and `GatewayError.headers()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

__all__ = [
    "AdminForbidden",
    "AuthenticationFailed",
    "AzureKeyRequired",
    "BodyTooLarge",
    "BudgetExhausted",
    "DatabaseUnavailable",
    "EntraUnavailable",
    "GatewayError",
    "HostileInput",
    "HttpRefused",
    "InvalidRequest",
    "KeyRateLimited",
    "MalformedBody",
    "MethodNotAllowed",
    "ModelNotAllowed",
    "ModelNotFound",
    "ModelNotPriced",
    "NoDeploymentAvailable",
    "NotFound",
    "OwnersUnavailable",
    "RateLimited",
    "RequestTimeout",
    "RouteNotFound",
    "UnsupportedMediaType",
    "UnsupportedParameter",
    "UpstreamAnswerTooLarge",
    "UpstreamError",
    "UpstreamEventTooLarge",
    "UpstreamHeadTooLarge",
    "UpstreamHttpError",
    "UpstreamInvalidAnswer",
    "UpstreamPoolTimeout",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "error_body",
]


def error_body(
    message: str,
    type_: str | None,
    code: str | None = None,
    param: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """OpenAI's error object: `{"error": {"message", "type", "param", "code", ...}}`."""
    error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    error.update(extra)
    return {"error": error}


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type_: ClassVar[str] = "server_error"
    code: str | None = None
    # A virtual key's own `x-ratelimit-*` headers, set on an error raised after its
    # limits let the request through (gateway/limitheaders.py `limit_error`): its answer
    # says them as a success would have. Rendered after `headers()`.
    limit_headers: Mapping[str, str] | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        return self.status

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type_, self.code, self.param)

    def headers(self) -> Mapping[str, str]:
        return {}

    def render(self) -> bytes:
        return orjson.dumps(self.body())


class HttpRefused(GatewayError):
    """A request the HTTP engine refused before the gateway saw it (malformed HTTP, a
    limit, a timeout): the engine names the status, the gateway renders it."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message, code=code)
        self._status = status
        self._retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        return self._status

    def headers(self) -> Mapping[str, str]:
        if self._retry_after_s is None:
            return {}
        return {"retry-after": str(self._retry_after_s)}

    def body(self) -> dict[str, Any]:
        type_ = "server_error" if self._status >= 500 else "invalid_request_error"
        return error_body(self.message, type_, self.code, self.param)


class InvalidRequest(GatewayError):
    status = 400
    type_ = "invalid_request_error"


class MalformedBody(InvalidRequest):
    pass


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class HostileInput(InvalidRequest):
    code = "invalid_value"


class AuthenticationFailed(GatewayError):
    status = 401
    type_ = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(GatewayError):
    status = 404
    type_ = "invalid_request_error"


class RouteNotFound(NotFound):
    code = "unknown_url"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, available: tuple[str, ...] = ()):
        listed = ", ".join(available[:50]) if available else "none"
        super().__init__(
            f"The model `{model}` does not exist or is not served by this gateway. "
            f"Configured models: {listed}.",
            param="model",
        )
        self.model = model


class ModelNotAllowed(NotFound):
    """A model the caller's virtual key may not use: OpenAI's answer for a model the key
    has no access to (it does not say whether the model exists)."""

    code = "model_not_found"

    def __init__(self, model: str, param: str = "model"):
        # `param`: where the client named it, said in the message: a body's field beside
        # its `model` (`_NAMED_BESIDE`), or a header (a Responses request's image
        # deployment, gateway/governed.py `check_image_allowed`)
        what = _NAMED_BESIDE.get(param) or f"deployment (the {param} header)"
        super().__init__(
            f"The {what} `{model}` does not exist or you do not have access to it.",
            param=param,
        )
        self.model = model


# What a body's field names that a key's allow-list judges: its `model`, a chat's data
# source's embedding deployment, a grader's model (gateway/governed.py, batchcheck.py).
_NAMED_BESIDE = {"model": "model", "data_sources": "embedding deployment (in `data_sources`)",
                 "grader": "grader's model"}


class AdminForbidden(GatewayError):
    status = 403
    type_ = "invalid_request_error"
    code = "forbidden"


class MethodNotAllowed(GatewayError):
    """A method the target does not take: `allow` names those it does, said in the
    answer's `Allow` header (RFC 9110 15.5.6: a 405 must carry one)."""

    status = 405
    type_ = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        # HEAD is GET without its body wherever GET is taken (RFC 9110 9.3.2).
        self.allow = (*allow, "HEAD") if "GET" in allow and "HEAD" not in allow else allow

    def headers(self) -> Mapping[str, str]:
        return {"Allow": ", ".join(self.allow)}


class RequestTimeout(GatewayError):
    status = 408
    type_ = "invalid_request_error"
    code = "timeout"


class BodyTooLarge(GatewayError):
    status = 413
    type_ = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type_ = "invalid_request_error"
    code = "unsupported_content_encoding"


class _RetryAfter(GatewayError):
    """An error that tells the client when to try again (`retry-after`, `retry-after-ms`)."""

    def __init__(self, message: str, *, retry_after_ms: int | None = None):
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def headers(self) -> Mapping[str, str]:
        if self.retry_after_ms is None:
            return {}
        seconds = max(1, -(-self.retry_after_ms // 1000))
        return {"retry-after": str(seconds), "retry-after-ms": str(self.retry_after_ms)}


class RateLimited(_RetryAfter):
    status = 429
    type_ = "requests"
    code = "rate_limit_exceeded"


class KeyRateLimited(RateLimited):
    """Over a virtual key's or its team's RPM, TPM or parallel limit: the gateway's own
    refusal, before Azure is called, with OpenAI's `x-ratelimit-*` headers."""

    def __init__(self, message: str, *, retry_after_ms: int, limit_headers: Mapping[str, str]):
        super().__init__(message, retry_after_ms=retry_after_ms)
        self._limit_headers = dict(limit_headers)

    def headers(self) -> Mapping[str, str]:
        return {**super().headers(), **self._limit_headers}


class BudgetExhausted(GatewayError):
    """A key or team has spent its budget for the period. OpenAI's answer for an
    exhausted quota; `x-should-retry: false` stops the SDKs' automatic retries."""

    status = 429
    type_ = "insufficient_quota"
    code = "insufficient_quota"

    def headers(self) -> Mapping[str, str]:
        return {"x-should-retry": "false"}


class ModelNotPriced(GatewayError):
    """A budgeted key asked for a model the price table does not know: its cost would
    be recorded as $0 (unpriced), so the budget would never stop it. Refused, never
    silently free; the operator adds the model under `prices:` in the config."""

    status = 403
    type_ = "invalid_request_error"
    code = "model_not_priced"


class AzureKeyRequired(GatewayError):
    """A virtual key asked for a passthrough deployment (no `api_key` in the config: the
    caller's own Azure key is sent on). The gateway has no Azure key of its own to send,
    and a virtual key is not one: no request with it can succeed there; the operator
    gives the deployment an `api_key` or `auth: entra`."""

    status = 403
    type_ = "invalid_request_error"
    code = "azure_key_required"


class DatabaseUnavailable(GatewayError):
    """The governance database cannot answer a query (the admin API's). Proxied
    requests never see it: the ledger spools instead."""

    status = 503
    code = "database_unavailable"


class OwnersUnavailable(_RetryAfter):
    """A restricted key's request names an object whose owner the governance database
    did not tell (it failed, or kept the look-up past its bound: gateway/ownership.py):
    not known to be gone nor another key's, so a retryable 503, not the 404 that tells a
    client the object is gone (it may drop what it kept of it)."""

    status = 503
    code = "service_unavailable"

    def __init__(self, object_id: str) -> None:
        super().__init__(f"The owner of {object_id} could not be read in time; try again.",
                         retry_after_ms=1000)
        self.param = "id"


class UpstreamHttpError(GatewayError):
    """An error status Azure answered, with its body already translated to OpenAI's shape."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
    ):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(str(message or f"Azure OpenAI answered {status}"))
        self._status = status
        self._body = body
        self._headers = dict(headers or {})

    @property
    def http_status(self) -> int:
        return self._status

    def body(self) -> dict[str, Any]:
        return self._body

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def replace_headers(self, headers: Mapping[str, str]) -> None:
        """Answer with `headers` instead (a virtual key's own limits in place of Azure's:
        gateway/limitheaders.py `limit_error`)."""
        self._headers = dict(headers)


class UpstreamError(GatewayError):
    """Azure could not be asked or did not answer properly. `request_sent` (default
    True, the safe assumption) is False when no byte of the request left the gateway."""

    status = 502
    type_ = "upstream_error"
    code = "upstream_error"
    request_sent: bool = True

    def __init__(
        self, message: str, *, request_sent: bool | None = None, param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message, param=param, code=code)
        if request_sent is not None:
            self.request_sent = request_sent


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamHeadTooLarge(UpstreamError):
    code = "upstream_head_too_large"


class UpstreamAnswerTooLarge(UpstreamError):
    code = "upstream_answer_too_large"


class UpstreamEventTooLarge(UpstreamError):
    code = "upstream_event_too_large"


class UpstreamInvalidAnswer(UpstreamError):
    code = "upstream_invalid_answer"


class EntraUnavailable(UpstreamError):
    code = "upstream_credentials_unavailable"
    request_sent = False


class NoDeploymentAvailable(_RetryAfter, UpstreamError):
    status = 503
    code = "no_deployment_available"
    request_sent = False


class UpstreamPoolTimeout(_RetryAfter, UpstreamError):
    """Every connection to the endpoint stayed busy for `pool_timeout`: nothing was sent,
    so another deployment may be tried; alone, the client is told to retry shortly."""

    status = 503
    code = "upstream_pool_timeout"
    request_sent = False

    def __init__(self, message: str, *, retry_after_ms: int | None = 1000):
        super().__init__(message, retry_after_ms=retry_after_ms)

