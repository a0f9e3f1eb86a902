"""An upstream URL parsed once, for either transport: the connection pool's key, where to
connect, and the `:authority`/`Host` and path a request names (fast/ makes its HTTP/1.1
request line of them, h2/ its pseudo-headers)."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

from azure_openai_proxy.errors import UpstreamUnreachable

__all__ = ["Origin", "parse_origin"]


class Origin(NamedTuple):
    """A URL parsed once: the connection pool's key, where to connect, and the
    pseudo-headers' values."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    authority: str
    path: str


def parse_origin(url: str) -> Origin:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UpstreamUnreachable(
            f"Cannot reach Azure OpenAI: bad URL ({exc})", request_sent=False
        ) from exc
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise UpstreamUnreachable(
            "Cannot reach Azure OpenAI: the URL is not http(s)://host/...", request_sent=False
        )
    default = 443 if scheme == "https" else 80
    port = port or default
    authority = f"[{host}]" if ":" in host else host
    if port != default:
        authority = f"{authority}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin((scheme, host, port), host, port, scheme == "https", authority, path)
