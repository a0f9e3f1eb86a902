"""The response side on the wire for `FastServer`: status lines, heads (checked on the
way out as on the way in), and the cached Date header."""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from operator import itemgetter

from azure_openai_proxy.http.interface import Answer

__all__ = ["BODYLESS_STATUS", "DateHeader", "answer_head", "response_head"]

BODYLESS_STATUS = frozenset({204, 304})
# The engine frames every answer itself: these, set by the application, are dropped.
_OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
# What a header name may hold (RFC 9110 `token`).
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Every control character (RFC 9110 field values hold none but HTAB; CR and LF only end
# lines) mapped to NUL, everything else to itself: a head translated with it holds
# exactly two NULs per line (its CR LF) unless a header holds a control character.
_CONTROLS = bytes.maketrans(bytes([*range(0x09), *range(0x0A, 0x20), 0x7F]), bytes(32))


class UnsafeHeader(ValueError):
    """A response header would break the framing or is not valid HTTP: a name that is
    not a token, or a value with a control character (CR, LF, NUL...) in it. The
    message never holds the value."""


def answer_head(answer: Answer, method: str, keep_alive: bool, date: str,
                extra: dict[str, str] | None = None) -> bytes:
    headers: Iterable[tuple[str, str]] = answer.headers.items()
    if extra:
        headers = [*headers, *extra.items()]
    status = answer.status
    bodyless = status < 200 or status in BODYLESS_STATUS
    length = None if bodyless or (method == "HEAD" and not answer.body) else len(answer.body)
    return response_head(status, headers, length, keep_alive, date)


def response_head(
    status: int, headers: Iterable[tuple[str, str]], length: int | None, keep_alive: bool,
    date: str, *, chunked: bool = False,
) -> bytes:
    """A response head. Raises `UnsafeHeader` rather than write a header that would
    split the head or smuggle a second response; framing headers in `headers`
    (`_OWN_HEADERS`, in any case) are dropped: the engine's own framing is the one."""
    pairs = headers if type(headers) is list else list(headers)
    if not _VALID_NAMES.issuperset(map(_name_of, pairs)):  # a name not seen before
        pairs = [pair for pair in pairs if pair[0] in _VALID_NAMES or not _check_name(pair[0])]
    try:
        # Every header line joined in C (`": ".join` of each pair), not one f-string per
        # header in Python: an answer carries a dozen of them.
        lines = [f"HTTP/1.1 {status} {reason(status)}", *map(": ".join, pairs),
                 f"Date: {date}"]
    except TypeError:  # a value that is not a str (the annotation says it is)
        lines = [f"HTTP/1.1 {status} {reason(status)}",
                 *[f"{name}: {value}" for name, value in pairs], f"Date: {date}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    elif chunked:
        lines.append("Transfer-Encoding: chunked")
    if not keep_alive:
        lines.append("Connection: close")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise UnsafeHeader("a response header holds a character outside latin-1") from None
    # One table translation and one count, in C, instead of a check per header in Python:
    # a line holds no control character but its CR LF (the head ends in an empty line).
    if head.translate(_CONTROLS).count(0) != 2 * (len(lines) + 1):
        raise UnsafeHeader("a control character in a response header value")
    return head


def _check_name(name: str) -> bool:
    """Whether `name` is a framing header (to drop); raises unless it is a token. Other
    valid names are remembered (the same few dozen go out on every answer, so each is
    checked once)."""
    if not (name and name.isascii() and _TOKEN.issuperset(name.encode())):
        raise UnsafeHeader(f"invalid response header name {name[:40]!r}")
    if name.lower() in _OWN_HEADERS:
        return True
    if len(_VALID_NAMES) < 4096:
        _VALID_NAMES.add(name)
    return False


_VALID_NAMES: set[str] = set()
_name_of = itemgetter(0)


def reason(status: int) -> str:
    phrase = _REASONS.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        _REASONS[status] = phrase  # bounded: a status is three digits
    return phrase


_REASONS: dict[int, str] = {}


class DateHeader:
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
