"""The response side on the wire for `FastServer`: status lines, heads, the cached Date
header, and the errors answered before a handler runs (in OpenAI's shape)."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from azure_openai_proxy.errors import (
    BodyTooLarge,
    GatewayError,
    MethodNotAllowed,
    RouteNotFound,
    error_body,
)
from azure_openai_proxy.http.request import FastRequest

_BODYLESS_STATUS = frozenset({204, 304})
_OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


class PlainAnswer:
    """A whole answer (status, headers, body) that FastServer writes in one go, without
    building an aiohttp `Response` and reading its head back out of it: `relay.py` makes
    one for every JSON answer served by FastServer, the gateway's most common reply.
    What the app's own code touches (`status`, `headers`, `prepared`) behaves as on a
    `web.Response`; `headers` is a plain dict with one spelling per name, and framing
    headers (length, encoding, connection) in it are dropped when spelled in lowercase,
    as relay.py's are: the server writes its own."""

    __slots__ = ("body", "headers", "status")
    prepared = False

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def _answer_head(answer: PlainAnswer, method: str, keep_alive: bool, date: str) -> bytes:
    headers = answer.headers
    if not _OWN_HEADERS.isdisjoint(headers):
        headers = {k: v for k, v in headers.items() if k not in _OWN_HEADERS}
    bodyless = answer.status < 200 or answer.status in _BODYLESS_STATUS
    length = None if bodyless or (method == "HEAD" and not answer.body) else len(answer.body)
    return _head(answer.status, _reason(answer.status), headers.items(), length, keep_alive, date)


class _Rejected(Exception):
    """The request cannot be parsed or is over a limit: answered, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_reply(date: str, status: int, message: str, code: str | None = None) -> bytes:
    """A complete OpenAI-shaped error response that closes the connection."""
    body = orjson.dumps(error_body(message, "invalid_request_error", code))
    return _head(status, _reason(status), (("Content-Type", "application/json"),),
                 len(body), False, date) + body


def _reason(status: int) -> str:
    phrase = _REASONS.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        _REASONS[status] = phrase  # bounded: a status is three digits
    return phrase


_REASONS: dict[int, str] = {}


class _DateHeader:
    """The `Date` value, formatted once a second rather than once a response."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = 0
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


def _head(
    status: int, reason: str, headers: Any, length: int | None, keep_alive: bool,
    date: str | None,
) -> bytes:
    """A response head; `date` None when the headers carry their own."""
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    if date is not None:
        lines.append(f"Date: {date}\r\n")
    if length is not None:
        lines.append(f"Content-Length: {length}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # Each line holds exactly one LF: a line break inside a header would start another.
    if head.count("\n") != len(lines):
        raise ValueError("Newline or carriage return detected in headers")
    return head.encode("latin-1")


def _response_head(
    response: web.Response, body_length: int, method: str, keep_alive: bool, date: str
) -> bytes:
    status = response.status
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _OWN_HEADERS]
    bodyless = status < 200 or status in _BODYLESS_STATUS
    has_type = "Content-Type" in response.headers
    if body_length and not has_type and not bodyless:
        headers.append(("Content-Type", "application/octet-stream"))
    length = None if bodyless or (method == "HEAD" and not body_length) else body_length
    return _head(status, response.reason, headers, length, keep_alive,
                 None if "Date" in response.headers else date)


def _is_plain(response: web.StreamResponse) -> bool:
    """A `web.Response` we may serialize ourselves: bytes body, no cookies, no compression."""
    return (type(response) is web.Response and not response.prepared
            and isinstance(response._body, (bytes, bytearray, type(None)))
            and not response._cookies and not response._compression and not response._chunked)


def _exception_response(exc: web.HTTPException, request: FastRequest) -> web.Response:
    error: GatewayError
    if isinstance(exc, web.HTTPNotFound):
        error = RouteNotFound(f"Unknown request URL: {request.method} {request.path}")
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        error = MethodNotAllowed(f"Method {request.method} is not allowed.")
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        error = BodyTooLarge("The request body is too large.")
    else:
        body = orjson.dumps(error_body(exc.reason, "invalid_request_error"))
        return web.Response(body=body, status=exc.status, content_type="application/json")
    response = web.Response(body=error.render(), status=error.http_status,
                            content_type="application/json")
    response.headers.update(error.headers())
    return response
