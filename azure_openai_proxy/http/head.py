"""The rules a request head must follow before FastServer serves it (RFC 9112), beyond
what llhttp already enforces.

llhttp (strict, as httptools runs it) refuses bad syntax, duplicate or non-numeric
Content-Length, Transfer-Encoding with Content-Length, and a Transfer-Encoding whose
final coding is not chunked. What it accepts and we do not:

- an HTTP version other than 1.0 and 1.1 (0.9, 2.0): 505;
- a target that is not a path (origin-form): absolute-form and asterisk-form are a 400
  (we are not a proxy), `CONNECT` a 405; `OPTIONS *` (RFC 9112 3.2.4) goes to the
  application;
- HTTP/1.1 without a Host header, or any request with several or with a value that is
  no host (`x, y`): 400 (RFC 9112 3.2);
- a transfer coding other than chunked (`gzip, chunked`): 501 (RFC 9112 6.1: we do
  not implement it); chunked not last, twice, or in an HTTP/1.0 request: 400;
- Transfer-Encoding with Content-Length: 400 (llhttp's verdict, kept here as well so
  the rule does not depend on a parser setting).

Each refusal is a `HeadRejected` naming its status; the connection answers it and closes.
"""

from __future__ import annotations

import re

from azure_openai_proxy.http.interface import Headers

__all__ = ["KNOWN_HOSTS", "HeadRejected", "check_version", "request_framing", "valid_host"]

# A Host value (RFC 9112 3.2: uri-host [":" port]; RFC 3986's host characters), or empty.
_HOST = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]*").fullmatch
# Host values found valid: a gateway sees the same few on nearly every request, and a set
# lookup costs less than the pattern. Bounded in number and length (past it, the pattern
# runs each time).
KNOWN_HOSTS: set[str] = set()


def valid_host(host: str) -> bool:
    if _HOST(host) is None:
        return False
    if len(KNOWN_HOSTS) < 1024 and len(host) <= 300:  # a DNS name is at most 253
        KNOWN_HOSTS.add(host)
    return True


class HeadRejected(Exception):
    """The request cannot be served: answered with `status`, then the connection closes."""

    def __init__(self, status: int, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def check_version(version: str) -> None:
    if version != "1.1" and version != "1.0":
        raise HeadRejected(505, "Only HTTP/1.1 and HTTP/1.0 are served here.",
                           "http_version_not_supported")


def request_framing(method: str, target: str, http11: bool,
                    headers: Headers) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a request whose head follows the rules above;
    raises `HeadRejected` otherwise."""
    if target[:1] != "/" and not (target == "*" and method == "OPTIONS"):
        if method == "CONNECT":
            raise HeadRejected(405, "CONNECT is not supported: this is not a proxy.",
                               "method_not_allowed")
        raise HeadRejected(400, "The request target must be a path such as /v1/models.")
    hosts = headers.getall("host", None)
    if hosts is None:
        if http11:
            raise HeadRejected(400, "An HTTP/1.1 request must have a Host header.")
    elif len(hosts) != 1:
        raise HeadRejected(400, "The request has more than one Host header.")
    elif hosts[0] not in KNOWN_HOSTS and not valid_host(hosts[0]):
        raise HeadRejected(400, "The request's Host header is not a valid host.")
    length = headers.get("content-length")
    if "transfer-encoding" not in headers:
        return (int(length) if length is not None else None), False
    if length is not None:
        raise HeadRejected(400, "The request has both Transfer-Encoding and Content-Length.")
    if not http11:
        raise HeadRejected(400, "An HTTP/1.0 request cannot use Transfer-Encoding.")
    _check_codings(headers.getall("transfer-encoding"))
    return None, True


def _check_codings(values: list[str]) -> None:
    codings = [c.strip().lower() for value in values for c in value.split(",")]
    codings = [c for c in codings if c]
    if not codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
        raise HeadRejected(400, "Transfer-Encoding must end with chunked, once.")
    if len(codings) > 1:
        raise HeadRejected(501, "Only the chunked transfer coding is supported.",
                           "not_implemented")
