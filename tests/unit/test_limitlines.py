"""A virtual key's `x-ratelimit-*` headers made once as head lines (`limit_lines`,
`Answer.head_lines`) are the same text as the dict the general path formats, and the
engine writes the same head from either."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from azure_openai_proxy.gateway.limitheaders import apply_lines, apply_to
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter
from azure_openai_proxy.governance.ratelimitheaders import (
    REQUESTS_LINES,
    TOKENS_LINES,
    bucket_templates,
    limit_headers,
    limit_lines,
    parse_lines,
)
from azure_openai_proxy.http.interface import Answer, head_line_pairs
from azure_openai_proxy.http.wire import answer_head


class _State:
    """A subject's buckets as the headers read them (`BucketState`)."""

    def __init__(self, rpm: int | None, rpm_level: float, tpm: int | None,
                 tpm_level: float) -> None:
        self.rpm = None if rpm is None else float(rpm)
        self.rpm_level, self.rpm_rate, self.rpm_text = rpm_level, (rpm or 1) / 60, str(rpm)
        self.tpm = None if tpm is None else float(tpm)
        self.tpm_level, self.tpm_rate, self.tpm_text = tpm_level, (tpm or 1) / 60, str(tpm)
        # Each bucket's lines by level and their templates, as a `Subject` keeps them.
        self.rpm_memo: dict[float, bytes] = {}
        self.tpm_memo: dict[float, bytes] = {}
        self.rpm_lines = bucket_templates(REQUESTS_LINES, self.rpm_text)
        self.tpm_lines = bucket_templates(TOKENS_LINES, self.tpm_text)


_limit = st.one_of(st.none(), st.integers(1, 10**10))
_fraction = st.floats(-1.0, 1.0)  # of the limit left: below zero after a settlement


@st.composite
def _states(draw: st.DrawFn) -> _State:
    rpm, tpm = draw(_limit), draw(_limit)
    return _State(rpm, (rpm or 0) * draw(_fraction), tpm, (tpm or 0) * draw(_fraction))


def _as_lines(headers: dict[str, str]) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()


@given(st.lists(_states(), min_size=1, max_size=3))
def test_the_lines_are_the_dicts_headers_in_order(subjects: list[_State]) -> None:
    states = tuple(subjects)
    lines = limit_lines(states)
    assert lines == _as_lines(limit_headers(states))
    assert parse_lines(lines) == limit_headers(states)


@given(st.integers(0, 5), st.floats(0, 3600), st.floats(0, 3600))
def test_resets_under_and_over_a_second_read_alike(spent: int, request_wait: float,
                                                   token_wait: float) -> None:
    """Each of the four templates (`%dms` or a duration, for requests and for tokens)."""
    state = _State(60, 60 - request_wait - spent, 600, 600 - 10 * token_wait)
    assert limit_lines((state,)) == _as_lines(limit_headers((state,)))


def test_an_admission_carries_the_lines_and_reads_them_as_a_dict() -> None:
    limiter = RateLimiter(lambda: 100.0)
    admitted = limiter.take(limiter.plan("k", Limits(rpm=100, tpm=1000), None, None), 900)
    assert isinstance(admitted, Admission)
    assert admitted.head_lines == (
        b"x-ratelimit-limit-requests: 100\r\nx-ratelimit-remaining-requests: 99\r\n"
        b"x-ratelimit-reset-requests: 600ms\r\nx-ratelimit-limit-tokens: 1000\r\n"
        b"x-ratelimit-remaining-tokens: 100\r\nx-ratelimit-reset-tokens: 54s\r\n")
    assert admitted.headers == parse_lines(admitted.head_lines)


_LINES = (b"x-ratelimit-limit-requests: 600\r\nx-ratelimit-remaining-requests: 599\r\n"
          b"x-ratelimit-reset-tokens: 6s\r\n")


class _Limits:
    head_lines = _LINES
    headers = parse_lines(_LINES)


def _heads(headers: dict[str, str], extra: dict[str, str] | None, status: int,
           method: str, keep_alive: bool) -> tuple[bytes, bytes]:
    """The head of an answer given its limits as head lines, and as dict entries."""
    fast = apply_lines(Answer(status, dict(headers), b"{}"), _Limits.head_lines)
    general = apply_to(Answer(status, dict(headers), b"{}"), _Limits.headers)
    assert isinstance(fast, Answer) and isinstance(general, Answer)
    assert [*fast.headers.items(), *head_line_pairs(fast.head_lines)] == list(
        general.headers.items())
    return (answer_head(fast, method, keep_alive, "Thu, 03 Dec 2026 16:00:00 GMT", extra),
            answer_head(general, method, keep_alive, "Thu, 03 Dec 2026 16:00:00 GMT", extra))


@given(st.sampled_from([{}, {"content-type": "application/json"},
                        {"content-type": "application/json", "X-RateLimit-Limit-Tokens": "9",
                         "apim-request-id": "r", "Content-Length": "5"}]),
       st.sampled_from([None, {}, {"Access-Control-Allow-Origin": "*"}]),
       st.sampled_from([200, 204, 429]), st.sampled_from(["GET", "HEAD", "POST"]),
       st.booleans())
def test_the_engine_writes_the_same_head_from_lines_as_from_the_dict(
        headers: dict[str, str], extra: dict[str, str] | None, status: int, method: str,
        keep_alive: bool) -> None:
    fast, general = _heads(headers, extra, status, method, keep_alive)
    assert fast == general
    assert b"X-RateLimit-Limit-Tokens" not in fast  # Azure's went


def test_head_line_pairs_read_the_lines_back() -> None:
    assert head_line_pairs(_LINES) == list(_Limits.headers.items())
    assert head_line_pairs(b"") == []


def test_azures_limits_go_from_every_answer_with_the_same_names() -> None:
    """The names judged once per set of names: the second answer is cleaned as well,
    and an answer's own dict is not changed (it may be shared)."""
    for _ in range(2):
        headers = {"content-type": "application/json", "x-ratelimit-remaining-tokens": "9"}
        answer = apply_lines(Answer(200, headers, b"{}"), _Limits.head_lines)
        assert isinstance(answer, Answer)
        assert answer.headers == {"content-type": "application/json"}
        assert headers["x-ratelimit-remaining-tokens"] == "9"
        assert answer.head_lines == _LINES
