"""The request side on the wire: a URL parsed once into a `_Target`, and the request
head built as one string."""

from __future__ import annotations

from typing import NamedTuple

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import HostileInput
from azure_openai_proxy.upstream.origin import parse_origin
from azure_openai_proxy.upstream.transport import UpstreamRequest

__all__ = ["_Target", "_head", "_parse_url"]

_SKIPPED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


class _Target(NamedTuple):
    """A URL parsed once: where to connect and the request line's tail with `Host`."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    head: str  # " /path?query HTTP/1.1\r\nHost: name\r\n"


def _parse_url(url: str) -> _Target:
    origin = parse_origin(url)
    return _Target(origin.key, origin.host, origin.port, origin.tls,
                   f" {origin.path} HTTP/1.1\r\nHost: {origin.authority}\r\n")


def _head(request: UpstreamRequest, target: _Target) -> tuple[bytes, bool]:
    """The request head, and whether the body goes chunked (a stream of unknown length).

    All but the body's framing is remembered per method, target and headers: the
    gateway sends the same few headers to the same URLs over and over."""
    key = (request.method, target.head, *request.headers.items())
    known = _PREFIXES.get(key)
    if known is None:
        known = _PREFIXES.put(key, _prefix(request, target))
    prefix, declared = known
    body = request.body
    if body is None:
        if request.method in _BODYLESS_METHODS:
            return prefix + b"\r\n", False
        return prefix + b"Content-Length: 0\r\n\r\n", False
    if not callable(body):
        return prefix + b"Content-Length: %d\r\n\r\n" % len(body), False
    if declared is not None:
        return prefix + b"Content-Length: %d\r\n\r\n" % declared, False
    return prefix + b"Transfer-Encoding: chunked\r\n\r\n", True


_PREFIX_CACHE_SIZE = 256
_PREFIXES: BoundedCache[tuple[object, ...], tuple[bytes, int | None]] = BoundedCache(
    _PREFIX_CACHE_SIZE
)


def _prefix(request: UpstreamRequest, target: _Target) -> tuple[bytes, int | None]:
    """The request line and headers (not the body's framing), and a declared length."""
    lines = [request.method, target.head]
    declared: int | None = None
    for name, value in request.headers.items():
        lower = name.lower()
        if lower not in _SKIPPED_HEADERS:
            lines.append(f"{name}: {value}\r\n")
        elif lower == "content-length":
            try:
                declared = int(value)
            except ValueError:
                raise HostileInput("A content-length sent upstream is not a number.") from None
    head = "".join(lines)
    # Each line ends in exactly one CRLF (the target's part holds two lines): a CR or LF
    # inside a name or value would start a header, or a request, of its own.
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise HostileInput("A header sent upstream holds a line break.")
    return head.encode(), declared
