"""The addresses a configuration names, checked once at load: Azure endpoints, upstream
proxies and the governance database. A bad one is a one-line config error, never a 500 on
every request; no message shows the value, which may hold a password.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote_to_bytes, urlsplit

__all__ = ["check_endpoint", "check_proxy", "cleartext_host", "proxy_warning", "sqlite_file"]


def check_endpoint(value: str) -> str:
    """An http(s) URL with a host and maybe a path (an APIM prefix); no query, no fragment.
    The scheme is lower-cased, as Go's url.Parse does (`HTTPS://` worked with the Go tool)."""
    value = value.strip()
    scheme, sep, rest = value.partition("://")
    value = scheme.lower() + sep + rest
    if "@" in rest.partition("/")[0]:
        # never echoed: it holds a password
        raise ValueError("must not carry user:password; give the key as api_key")
    if not re.match(r"^https?://[^/?#\s@]+(/[^?#\s]*)?$", value) or _bad_authority(value):
        # A port past 65535 or an unclosed `[` passed, and each request was a 500.
        raise ValueError("must be an http(s) URL such as https://NAME.openai.azure.com/ "
                         "(a host, and a port from 1 to 65535 if any)")
    return value.rstrip("/")


def _bad_authority(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return not parts.hostname or parts.port == 0
    except ValueError:  # a port out of range or not a number, an unclosed IPv6 bracket
        return True


def cleartext_host(endpoint: str) -> str | None:
    """The host of an http:// endpoint that is not a loopback address, else None
    (`localhost.`, fully qualified, is loopback too)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    name = host.rstrip(".")
    if parts.scheme != "http" or name == "localhost" or name.endswith(".localhost"):
        return None
    try:
        return None if ipaddress.ip_address(host).is_loopback else host
    except ValueError:  # a name
        return host


# What aiohttp-socks takes, and the port Go's net/http gives a proxy URL without one
# (an `http://user:pw@proxy` failed every request with a 500).
_PROXY_PORTS = {"http": 80, "socks5": 1080, "socks4": 1080}
# Remote name resolution, which every upstream client asks a SOCKS proxy for anyway.
_PROXY_SCHEMES = {"socks5h": "socks5", "socks4a": "socks4"}


def check_proxy(value: str | None) -> str | None:
    """An upstream proxy URL, with its default port made explicit and its path dropped
    (a proxy is a host and a port; Go's net/http ignores a path too, so
    `http://proxy:3128/x` worked with the Go tool); the message never shows the URL, which
    may hold user:password."""
    if value is None or not value.strip():
        return None
    url = value.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    scheme = _PROXY_SCHEMES.get(scheme, scheme)
    url = scheme + sep + rest
    if (not sep or scheme not in _PROXY_PORTS or "?" in rest or "#" in rest
            or _bad_authority(url)):
        raise ValueError("must be a URL such as http://HOST:3128 or "
                         "socks5://USER:PASSWORD@HOST:1080 (http, socks5 or socks4; a host; "
                         "a port from 1 to 65535 if any; @ : / ? # in a password "
                         "percent-encoded)")
    parts = urlsplit(url)
    refused = _credentials_refused(scheme, parts.netloc.rpartition("@"))
    if refused:
        raise ValueError(refused)
    netloc = parts.netloc.removesuffix(":")
    return f"{scheme}://{netloc}" if parts.port else f"{scheme}://{netloc}:{_PROXY_PORTS[scheme]}"


def _credentials_refused(scheme: str, netloc: tuple[str, str, str]) -> str | None:
    """Why a proxy URL's `user:password` cannot be sent as written, or None. The clients
    (python-socks, under aiohttp-socks and websockets) raised on what they cannot encode,
    every request a 500: a SOCKS user or password outside ASCII or past 255 bytes (a
    SOCKS5 field's most); and sent none at all for a password without a user. An HTTP
    proxy's go as their bytes, whatever they are (upstream/tunnel.py, for both clients):
    UTF-8 as written, or percent-encoded bytes as given (`p%E4ss` for a proxy that
    checks Latin-1, which aiohttp-socks' encoding sent `pä` as until UTF-8 was)."""
    userinfo, at, _ = netloc
    if not at:
        return None
    user, _, password = (unquote_to_bytes(part) for part in userinfo.partition(":"))
    if password and not user:
        return "has a password but no user: the proxy would be sent neither"
    if scheme == "http":
        return None
    if not (user + password).isascii() or max(len(user), len(password)) > 255:
        return (f"has a user or password a {scheme} proxy cannot be sent: each at most 255 "
                "ASCII characters")
    return None


def proxy_warning(url: str | None) -> str | None:
    """What check-config and the start say of a checked proxy URL that loads but may not
    do what it says. A SOCKS5 user without a password: python-socks then offers the proxy
    no authentication only (it sends user/password with both set), so a proxy that takes
    anonymous clients works, as it did with the Go tool, and one that wants the user (Go's
    x/net/proxy sends it with an empty password) refuses every request. A SOCKS4 password:
    SOCKS4 has no field for one, so only the user is sent and the password is dropped."""
    if url is None or not url.startswith(("socks5://", "socks4://")):
        return None
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if url.startswith("socks4://"):
        if not password:
            return None
        return ("upstream socks4 proxy: SOCKS4 has no password, so the one in the URL is "
                "not sent (only the user is): give socks5:// if the proxy wants a password")
    if not at or not user or password:
        return None
    return ("upstream socks5 proxy: a user without a password is not sent (no "
            "authentication is offered; a proxy that wants the user refuses every request): "
            "give USER:PASSWORD, or no user")


def sqlite_file(url: str) -> str:
    """`sqlite:///abs/path.db` (three slashes and an absolute path) or
    `sqlite://relative/path.db` -> the file's path (store/sqlite.py opens it). Anything
    else is a ValueError."""
    if not url.startswith("sqlite://"):
        raise ValueError("only sqlite:// databases are supported (e.g. sqlite:///var/lib/azure-openai-proxy/gateway.db)")
    rest = url[len("sqlite://"):]
    if not rest or rest == "/":
        raise ValueError("a sqlite:// database needs a file path")
    # Taken as a file name, SQLAlchemy's `?mode=ro` or `?timeout=30` and `:memory:` made
    # a new, empty database beside the one meant (`gateway.db?mode=ro`, `/:memory:`):
    # the keys made with the plain path were not there. A `#` is a file name's, as in
    # SQLAlchemy's URLs (`/srv/team#2/gateway.db`).
    if "?" in rest or rest.rpartition("/")[2] == ":memory:":
        raise ValueError("a sqlite:// database is a file path without `?` (no options) "
                         "and not :memory: (every worker and the CLI share the file)")
    return rest
