"""A subject's `x-ratelimit-*` head lines through limit changes (review of govcut).

`Subject` keeps each bucket's lines by level (`rpm_memo`, `tpm_memo`) and the templates
holding its limit's digits (`rpm_lines`, `tpm_lines`): both stand for the limit they were
made with. Over random sequences of takes, settlements (debts among them), waits, reloads
(`configure`), another worker's limits (`follow`, `follow_row`) and resets, with limits
whose digit count changes (9 -> 10, 99,999 -> 100,000), every answer's lines are those
`limit_headers` gives for the subject's state then, with its limit's digits, and a memo
never holds more than `MEMO_SIZE` levels."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.governance.buckets import Refusal, Subject, UsualLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimitheaders import (
    MEMO_SIZE,
    limit_headers,
    limit_lines,
    parse_lines,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Limits whose digits grow or shrink by one, and the extremes.
_LIMIT = st.sampled_from([None, 1, 9, 10, 99, 100, 99_999, 100_000, 10**10])
_TAKE = st.tuples(st.just("take"), st.integers(0, 1), st.integers(0, 150_000))
_STEP = st.one_of(
    _TAKE, _TAKE, _TAKE,  # most steps are requests: many levels between two changes
    st.tuples(st.just("settle"), st.integers(0, 1), st.integers(0, 300_000)),
    st.tuples(st.just("wait"), st.integers(0, 1), st.sampled_from([0.0, 0.001, 0.5, 1.0, 7.3, 61.0])),
    st.tuples(st.just("configure"), st.integers(0, 1), st.tuples(_LIMIT, _LIMIT)),
    st.tuples(st.just("follow"), st.integers(0, 1), st.tuples(_LIMIT, _LIMIT)),
    st.tuples(st.just("follow_row"), st.integers(0, 1), st.tuples(_LIMIT, _LIMIT)),
    st.tuples(st.just("fill"), st.integers(0, 1), st.none()),
)


def _as_lines(headers: dict[str, str]) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()


def _check(subjects: tuple[Subject, ...]) -> None:
    """The lines of `subjects` now are the dict's headers, with each limit's digits."""
    lines = limit_lines(subjects)
    headers = limit_headers(subjects)
    assert lines == _as_lines(headers)
    for state in subjects:
        assert len(state.rpm_memo) <= MEMO_SIZE and len(state.tpm_memo) <= MEMO_SIZE
    shown = parse_lines(lines)
    if len(subjects) == 1:  # one subject: the limit shown is its own
        state = subjects[0]
        if state.rpm is not None:
            assert shown["x-ratelimit-limit-requests"] == str(int(state.rpm))
        if state.tpm is not None:
            assert shown["x-ratelimit-limit-tokens"] == str(int(state.tpm))


@settings(max_examples=300, deadline=None)
@given(st.tuples(_LIMIT, _LIMIT), st.tuples(_LIMIT, _LIMIT), st.lists(_STEP, max_size=40))
def test_lines_follow_every_limit_change(first: tuple[int | None, int | None],
                                         second: tuple[int | None, int | None],
                                         steps: list[tuple[str, int, object]]) -> None:
    clock = _Clock()
    subjects = (Subject("key"), Subject("team"))
    for state, (rpm, tpm) in zip(subjects, (first, second), strict=True):
        state.configure(Limits(rpm=rpm, tpm=tpm), clock.now)
    taken: list[tuple[int, int]] = []  # (subject, tokens) of each request in flight
    version = 1.0
    for kind, which, value in steps:
        state = subjects[which]
        if kind == "take" and state.usual:
            assert isinstance(value, int)
            lines = UsualLimits(state, clock).take(value)
            if not isinstance(lines, Refusal):
                taken.append((which, value))
                # the answer's lines are the state's after the take, as the dict says
                assert lines == _as_lines(limit_headers((state,)))
        elif kind == "settle" and taken:
            assert isinstance(value, int)
            owner, reserved = taken.pop(0)
            UsualLimits(subjects[owner], clock).settle(reserved, value)
        elif kind == "wait":
            assert isinstance(value, float)
            clock.now += value
            state.refill(clock.now)
        elif kind == "configure":
            assert isinstance(value, tuple)
            state.configure(Limits(rpm=value[0], tpm=value[1]), clock.now)
        elif kind == "follow":
            assert isinstance(value, tuple)
            state.follow(float(value[0] or 0), float(value[1] or 0), None)
        elif kind == "follow_row":
            assert isinstance(value, tuple)
            version += 1
            state.follow_row(float(value[0] or 0), float(value[1] or 0), 0.0, version)
        elif kind == "fill":
            state.fill(clock.now)
        _check((state,))
        _check(subjects)
