"""The short path's remembered head lines (governance/buckets.py `UsualLimits.take`) at
the edges the review of the governed loop named: limits changed (reload, admin API, a
limit removed or a parallel one added), keys reloaded (`forget`), time passing with the
same levels, settles below zero, and two workers sharing one table. Every admission's lines are the ones `limit_lines`
makes fresh from the state right after its take, and the short path decides as the
general loop does; the lines are always plain ASCII header lines."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from azure_openai_proxy.governance.ratelimitheaders import limit_lines
from azure_openai_proxy.governance.sharedlimits import SharedLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_limits = st.builds(Limits, rpm=st.one_of(st.none(), st.integers(1, 20)),
                    tpm=st.one_of(st.none(), st.integers(1, 3000)),
                    max_parallel=st.sampled_from([None, None, None, 2]))
_step = st.one_of(
    st.tuples(st.just("limits"), _limits),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 1e-9, 0.5, 1.0, 3.0, 60.0, 7.3])),
    st.tuples(st.just("settle"), st.one_of(st.none(), st.integers(0, 4000))),
    st.tuples(st.just("forget"), st.booleans()),
    st.tuples(st.just("take"), st.tuples(st.integers(0, 1),
                                         st.sampled_from([0, 1, 100, 2999, 3000]))),
)
_steps = st.lists(_step, min_size=1, max_size=60)


@contextmanager
def _workers(clock: Clock, shared: bool) -> Iterator[tuple[RateLimiter, RateLimiter]]:
    """Two workers: sharing one table, or each its own (then worker 1 is unused state)."""
    pair = RateLimiter(clock), RateLimiter(clock)
    if not shared:
        yield pair
        return
    with tempfile.TemporaryDirectory() as directory:
        spec = SharedLimits.create(workers=2, slots=16, directory=directory)
        try:
            for worker, limiter in enumerate(pair):
                limiter.share(spec.open(worker))
            yield pair
        finally:
            spec.remove()


def _outcome(result: Admission | Refusal) -> tuple[object, ...]:
    if isinstance(result, Refusal):
        return ("refused", result.subject, result.kind, result.retry_after, result.headers,
                result.never)
    return ("admitted", result.reserved, result.head_lines)


@settings(max_examples=150, deadline=None)
@given(_limits, _steps, st.booleans())
def test_remembered_lines_are_fresh_lines_and_the_short_path_is_the_loop(
        first: Limits, steps: list[tuple[str, object]], shared: bool) -> None:
    clock = Clock()
    limits = first
    held: list[tuple[int, Admission, Admission]] = []
    with _workers(clock, shared) as short, _workers(clock, shared) as loop:
        for kind, value in steps:
            if kind == "limits":
                assert isinstance(value, Limits)
                limits = value
            elif kind == "wait":
                assert isinstance(value, float)
                clock.now += value
            elif kind == "settle" and held:
                worker, fast, slow = held.pop(0)
                assert value is None or isinstance(value, int)
                short[worker].settle(fast, value)
                loop[worker].settle(slow, value)
            elif kind == "forget":
                keep = ["key:k"] if value else []
                for limiter in (*short, *loop):
                    limiter.forget(keep)
            elif kind == "take":
                assert isinstance(value, tuple)
                worker, tokens = value
                plan = short[worker].plan("k", limits, None, None)
                general = loop[worker].plan("k", limits, None, None)
                general.only = None  # the general loop, on twin buckets
                taken, looped = short[worker].take(plan, tokens), loop[worker].take(general, tokens)
                assert _outcome(taken) == _outcome(looped)
                if isinstance(taken, Admission) and isinstance(looped, Admission):
                    # What the answer says is what the buckets say now, made fresh.
                    assert taken.head_lines == limit_lines(plan.subjects)
                    held.append((worker, taken, looped))
        assert short[0].snapshot() == loop[0].snapshot()


_LINE = re.compile(rb"x-ratelimit-(limit|remaining|reset)-(requests|tokens): "
                   rb"(\d+|\d+ms|(\d+m)?\d+(\.\d{1,3})?s)\r\n")


@settings(max_examples=300)
@given(st.integers(1, 2**63 - 1), st.integers(1, 2**63 - 1),
       st.lists(st.tuples(st.floats(0, 1e6), st.integers(-(2**40), 2**40)), max_size=8))
def test_head_lines_are_always_plain_ascii_header_lines(
        rpm: int, tpm: int, steps: list[tuple[float, int]]) -> None:
    """Spliced into the head unchecked (http/wire.py `answer_head`): whatever the limits
    (up to what the store holds) and levels (over-usage settles take a bucket below
    zero), each line is a known name and a number or a duration, ending in CR LF."""
    clock = Clock()
    limiter = RateLimiter(clock)
    plan = limiter.plan("k", Limits(rpm=rpm, tpm=tpm), None, None)
    for seconds, used in steps:
        clock.now += seconds
        taken = limiter.take(plan, 0)
        if isinstance(taken, Admission):
            lines = taken.head_lines
            assert lines.isascii() and lines.endswith(b"\r\n")
            assert all(_LINE.fullmatch(line + b"\r\n")
                       for line in lines.split(b"\r\n")[:-1]), lines
            limiter.settle(taken, max(used, 0))
