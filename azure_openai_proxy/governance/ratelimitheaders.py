"""OpenAI's `x-ratelimit-*` headers for a key's (and its team's) buckets: what the
limiter (governance/ratelimit.py) puts on every admitted answer and every refusal.
Pure: numbers in, header strings out: a dict (`limit_headers`), or the same headers as
the lines of a response head (`limit_lines`), which the HTTP engine adds as they are
(`Answer.head_lines`): every value is a number or a duration the limiter made."""

from __future__ import annotations

import functools
from typing import Protocol

__all__ = [
    "MEMO_SIZE",
    "REQUESTS_LINES",
    "TOKENS_LINES",
    "BucketState",
    "bucket_lines",
    "bucket_templates",
    "duration",
    "limit_headers",
    "limit_lines",
    "parse_lines",
]


class BucketState(Protocol):
    """What the headers read of a subject's buckets (buckets.py's `Subject`): each one's
    limit, level, rate and limit's text, and its lines' memo and templates
    (`bucket_lines`), made anew whenever its limit changes."""

    rpm: float | None
    rpm_level: float
    rpm_rate: float
    rpm_text: str
    rpm_memo: dict[float, bytes]
    rpm_lines: tuple[bytes, bytes]
    tpm: float | None
    tpm_level: float
    tpm_rate: float
    tpm_text: str
    tpm_memo: dict[float, bytes]
    tpm_lines: tuple[bytes, bytes]


# One bucket's three lines, for `bucket_lines`: its limit's text is put in once per
# limit (`bucket_templates`), then each answer formats two numbers into bytes.
_REQUESTS = ("x-ratelimit-limit-requests: {}\r\nx-ratelimit-remaining-requests: %d\r\n"
             "x-ratelimit-reset-requests: ")
_TOKENS = ("x-ratelimit-limit-tokens: {}\r\nx-ratelimit-remaining-tokens: %d\r\n"
           "x-ratelimit-reset-tokens: ")
REQUESTS_LINES = _REQUESTS
TOKENS_LINES = _TOKENS
# The most levels a bucket's `memo` keeps: a few recur (a full bucket's after a take,
# the usual request sizes); cleared when full, as `BoundedCache` is.
MEMO_SIZE = 4


def bucket_templates(head: str, text: str) -> tuple[bytes, bytes]:
    """`bucket_lines`' templates for a bucket (`head`: `REQUESTS_LINES` or
    `TOKENS_LINES`) whose limit reads `text` (an integer's digits): its reset as
    `duration`'s text from a second up, and as `%dms` under one."""
    first = head.format(text).encode()
    return first + b"%b\r\n", first + b"%dms\r\n"


def bucket_lines(memo: dict[float, bytes], templates: tuple[bytes, bytes], cap: float,
                 level: float, rate: float) -> bytes:
    """`limit_lines`' three lines of one bucket (`templates`: `bucket_templates`) at
    `level`, remembered in `memo` by that level. The numbers are formatted into bytes as
    `limit_headers` rounds them (`%d` truncates a float as `int` does): no text encoded,
    no integer made of them but the one a reset from a second up is looked up by
    (a look-up of the two integers first cost more than the format it spared)."""
    wait = (cap - level) / rate  # >= 0: a level is never above its cap
    if wait < 1:
        lines = templates[1] % (level if level >= 1 else 0, wait * 1000 + 0.999999)
    else:
        lines = templates[0] % (level if level >= 1 else 0,
                                _seconds_bytes(int(wait * 1000 + 0.999999)))
    if len(memo) >= MEMO_SIZE:  # a miss: `level` is not in it
        memo.clear()
    memo[level] = lines
    return lines


def limit_lines(subjects: tuple[BucketState, ...]) -> bytes:
    """`limit_headers(subjects)` as the lines of a response head (`name: value\r\n`
    each, ASCII), the same text in the same order: the tightest requests bucket's three
    lines, then the tightest tokens bucket's, each remembered by its level or made by
    `bucket_lines`, as `UsualLimits.take` makes them. Runs for every governed request off
    the short path (a team's key, a parallel limit, a budget, `--workers`): one `%` of
    six values into a str, encoded, cost ~14,700 instructions a call, two buckets' lines
    remembered ~1,100 and made ~6,000."""
    requests = tokens = subjects[0]
    if len(subjects) > 1:
        requests, tokens = _tightest(subjects)
    lines = b""
    cap = requests.rpm
    if cap is not None:
        level = requests.rpm_level
        lines = requests.rpm_memo.get(level) or bucket_lines(
            requests.rpm_memo, requests.rpm_lines, cap, level, requests.rpm_rate)
    cap = tokens.tpm
    if cap is not None:
        level = tokens.tpm_level
        lines += tokens.tpm_memo.get(level) or bucket_lines(
            tokens.tpm_memo, tokens.tpm_lines, cap, level, tokens.tpm_rate)
    return lines


def parse_lines(lines: bytes) -> dict[str, str]:
    """The headers `limit_lines` wrote, as `limit_headers` gives them."""
    pairs = (line.split(": ", 1) for line in lines.decode("latin-1").split("\r\n") if line)
    return {name: value for name, value in pairs}


def _tightest(subjects: tuple[BucketState, ...]) -> tuple[BucketState, BucketState]:
    """The subjects with the least left of their requests and of their tokens."""
    requests = tokens = subjects[0]
    for state in subjects[1:]:
        if state.rpm is not None and (requests.rpm is None
                                      or state.rpm_level < requests.rpm_level):
            requests = state
        if state.tpm is not None and (tokens.tpm is None
                                      or state.tpm_level < tokens.tpm_level):
            tokens = state
    return requests, tokens


def limit_headers(subjects: tuple[BucketState, ...]) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the tightest of `subjects`' buckets. Runs for
    every request: a subject with both limits (the usual) is one dict display, and the
    numbers are formatted with `%` (one operation in C where `str(int(x))` and `round`
    are calls: about 750 instructions fewer for two numbers, measured with callgrind)."""
    requests = tokens = subjects[0]
    if len(subjects) > 1:
        requests, tokens = _tightest(subjects)
    cap, tpm = requests.rpm, tokens.tpm
    if cap is not None and tpm is not None:
        level, tokens_level = requests.rpm_level, tokens.tpm_level
        wait = (cap - level) / requests.rpm_rate
        tokens_wait = (tpm - tokens_level) / tokens.tpm_rate
        return {
            "x-ratelimit-limit-requests": requests.rpm_text,
            "x-ratelimit-remaining-requests": "%d" % level if level >= 1 else "0",  # noqa: UP031
            "x-ratelimit-reset-requests": (
                "%dms" % (wait * 1000 + 0.999999) if wait < 1 else duration(wait)),  # noqa: UP031
            "x-ratelimit-limit-tokens": tokens.tpm_text,
            "x-ratelimit-remaining-tokens": "%d" % tokens_level if tokens_level >= 1 else "0",  # noqa: UP031
            "x-ratelimit-reset-tokens": (
                "%dms" % (tokens_wait * 1000 + 0.999999) if tokens_wait < 1  # noqa: UP031
                else duration(tokens_wait)),
        }
    if cap is not None:
        return _bucket_headers("requests", requests.rpm_text, cap, requests.rpm_level,
                               requests.rpm_rate)
    if tpm is not None:
        return _bucket_headers("tokens", tokens.tpm_text, tpm, tokens.tpm_level,
                               tokens.tpm_rate)
    return {}


def _bucket_headers(kind: str, text: str, cap: float, level: float,
                    rate: float) -> dict[str, str]:
    """`limit_headers` for a subject limited on one bucket alone."""
    wait = (cap - level) / rate
    return {
        "x-ratelimit-limit-" + kind: text,
        "x-ratelimit-remaining-" + kind: "%d" % level if level >= 1 else "0",  # noqa: UP031
        "x-ratelimit-reset-" + kind: (
            "%dms" % (wait * 1000 + 0.999999) if wait < 1 else duration(wait)),  # noqa: UP031
    }


def duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: `20ms`, `1.5s`, `6m0s`, to the millisecond
    rounded up (a client that waits what it says finds the bucket full)."""
    if seconds < 1:
        return f"{int(seconds * 1000 + 0.999999)}ms" if seconds > 0 else "0ms"
    return _seconds_text(int(seconds * 1000 + 0.999999))


@functools.lru_cache(maxsize=4096)
def _seconds_bytes(ms: int) -> bytes:
    """`_seconds_text`, encoded (`bucket_lines`' reset from a second up)."""
    return _seconds_text(ms).encode()


@functools.lru_cache(maxsize=4096)
def _seconds_text(ms: int) -> str:
    """`duration` from a second up, remembered: a request's TPM reset is often a second
    or more, and formatting it costs more than the rest of its headers."""
    whole, ms = divmod(ms, 1000)
    minutes, whole = divmod(whole, 60)
    text = f"{minutes}m{whole}" if minutes else f"{whole}"
    return f"{text}.{ms:03d}".rstrip("0") + "s" if ms else text + "s"
