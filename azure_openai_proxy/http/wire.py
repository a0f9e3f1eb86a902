"""The response side on the wire for `FastServer`: status lines, heads (checked on the
way out as on the way in), and the cached Date header."""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

from azure_openai_proxy.http.interface import Answer, head_line_pairs

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
    lines = answer.head_lines
    if extra:
        headers = ([*headers, *extra.items()] if not lines
                   else [*headers, *head_line_pairs(lines), *extra.items()])
        lines = b""
    status = answer.status
    bodyless = status < 200 or status in BODYLESS_STATUS
    length = None if bodyless or (method == "HEAD" and not answer.body) else len(answer.body)
    return response_head(status, headers, length, keep_alive, date, head_lines=lines)


def response_head(
    status: int, headers: Iterable[tuple[str, str]], length: int | None, keep_alive: bool,
    date: str, *, chunked: bool = False, head_lines: bytes = b"",
) -> bytes:
    """A response head. Raises `UnsafeHeader` rather than write a header that would
    split the head or smuggle a second response; framing headers in `headers`
    (`_OWN_HEADERS`, in any case) are dropped: the engine's own framing is the one.
    `head_lines` (`Answer.head_lines`, lines made and checked by the application) go
    after `headers`, before the engine's own lines, as they are."""
    lines = [_STATUS_LINES.get(status) or _status_line(status)]
    for name, value in headers:
        if name not in _VALID_NAMES and _check_name(name):
            continue
        lines.append(f"{name}: {value}\r\n")
    # The engine's own lines in one piece: Date, the framing, the end of the head.
    ends = len(lines) + 2  # each line so far, Date, and the empty line
    if length is not None:
        framing = f"Content-Length: {length}\r\n"
        ends += 1
    elif chunked:
        framing = "Transfer-Encoding: chunked\r\n"
        ends += 1
    else:
        framing = ""
    if keep_alive:
        end = f"Date: {date}\r\n{framing}\r\n"
    else:
        end = f"Date: {date}\r\n{framing}Connection: close\r\n\r\n"
        ends += 1
    if head_lines:  # the application's lines go between the headers' and the engine's
        expected = 2 * len(lines)
    else:
        lines.append(end)
        expected = 2 * ends
    try:
        head = "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise UnsafeHeader("a response header holds a character outside latin-1") from None
    # One table translation and one count, in C, instead of a check per header in Python:
    # a CR and an LF (mapped to NUL) at the end of each line, and no other control.
    if head.translate(_CONTROLS).count(0) != expected:
        raise UnsafeHeader("a control character in a response header value")
    if head_lines:  # joined as bytes: no search for where the engine's lines begin
        return b"".join((head, head_lines, end.encode()))
    return head


def _status_line(status: int) -> str:
    # A status is three digits (RFC 9110 15): anything else would be a broken status
    # line, and kept here it would grow the table without bound.
    if not (isinstance(status, int) and 100 <= status <= 999):
        raise UnsafeHeader(f"invalid response status {status!r:.40}")
    line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason(status)}\r\n"
    return line


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
_STATUS_LINES: dict[int, str] = {}


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
