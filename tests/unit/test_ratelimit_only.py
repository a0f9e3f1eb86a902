"""The limiter's short path for the usual plan (one subject, an RPM and a TPM limit, no
parallel one: `LimitPlan.only`, governance/buckets.py `UsualLimits.take`) decides and
answers exactly as the general path does, and the head lines it remembers (the same
levels as the last answer's) are never those of other limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from azure_openai_proxy.governance.ratelimitheaders import limit_lines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _outcome(result: Admission | Refusal) -> tuple[object, ...]:
    if isinstance(result, Refusal):
        return ("refused", result.subject, result.kind, result.retry_after, result.headers,
                result.never)
    return ("admitted", result.reserved, result.head_lines)


_steps = st.lists(st.tuples(
    st.floats(0, 30),                           # seconds since the previous step
    st.integers(0, 3000),                       # tokens reserved
    st.one_of(st.none(), st.integers(0, 3000)),  # tokens used (None: unknown)
    st.booleans(),                              # settled before the next step
), min_size=1, max_size=40)


@settings(max_examples=300)
@given(st.integers(1, 50), st.integers(1, 5000), _steps)
def test_the_short_path_is_the_general_path(rpm: int, tpm: int,
                                            steps: list[tuple[float, int, int | None, bool]]) -> None:
    clocks = Clock(), Clock()
    short, general = RateLimiter(clocks[0]), RateLimiter(clocks[1])
    limits = Limits(rpm=rpm, tpm=tpm)
    plans = short.plan("k", limits, None, None), general.plan("k", limits, None, None)
    assert plans[0].only is not None
    plans[1].only = None  # the general loop, on the same buckets
    held: list[tuple[Admission, Admission]] = []
    for seconds, tokens, used, settle in steps:
        for clock in clocks:
            clock.now += seconds
        results = short.take(plans[0], tokens), general.take(plans[1], tokens)
        assert _outcome(results[0]) == _outcome(results[1])
        if isinstance(results[0], Admission) and isinstance(results[1], Admission):
            # The general path's lines are `limit_lines` of the state after the take.
            assert results[1].head_lines == limit_lines(plans[1].subjects)
            held.append((results[0], results[1]))
        if settle and held:
            first, second = held.pop(0)
            short.settle(first, used)
            general.settle(second, used)
    assert short.snapshot() == general.snapshot()


def test_only_the_usual_plan_takes_the_short_path() -> None:
    limiter = RateLimiter(Clock())
    assert limiter.plan("a", Limits(rpm=5, tpm=10), None, None).only is not None
    assert limiter.plan("b", Limits(rpm=5), None, None).only is None
    assert limiter.plan("c", Limits(tpm=5), None, None).only is None
    assert limiter.plan("d", Limits(rpm=5, tpm=10, max_parallel=2), None, None).only is None
    assert limiter.plan("e", Limits(rpm=5, tpm=10), "t", Limits(rpm=1)).only is None


def test_a_subject_whose_limits_change_makes_its_other_plans_anew() -> None:
    """A team's limits given a parallel limit through one key's plan: its other keys'
    plans must not keep a short path that skips it (nor `admit`'s subjects)."""
    limiter = RateLimiter(Clock())
    plan = limiter.plan("k", Limits(rpm=5, tpm=10), None, None)
    assert plan.only is not None
    limiter.admit([("key:k", Limits(rpm=5, tpm=10, max_parallel=1))], 0)
    again = limiter.plan("k", plan.key_limits or Limits(), None, None)
    assert again is not plan


def test_remembered_lines_are_forgotten_when_the_limits_change() -> None:
    """The same levels after a take, under another limit, are another answer."""
    clock = Clock()
    limiter = RateLimiter(clock)
    first = limiter.take(limiter.plan("k", Limits(rpm=60, tpm=1000), None, None), 0)
    assert isinstance(first, Admission)
    assert b"x-ratelimit-limit-requests: 60\r\nx-ratelimit-remaining-requests: 59\r\n" in (
        first.head_lines)
    limiter.settle(first, 0)
    plan = limiter.plan("k", Limits(rpm=120, tpm=1000), None, None)  # 59 + the 60 raised
    clock.now += 0.5  # one request back at 2 a second: 120, then 119 after the take
    second = limiter.take(plan, 0)
    assert isinstance(second, Admission)
    assert second.head_lines == (
        b"x-ratelimit-limit-requests: 120\r\nx-ratelimit-remaining-requests: 119\r\n"
        b"x-ratelimit-reset-requests: 500ms\r\nx-ratelimit-limit-tokens: 1000\r\n"
        b"x-ratelimit-remaining-tokens: 1000\r\nx-ratelimit-reset-tokens: 0ms\r\n")


def test_the_same_levels_give_the_same_lines() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    plan = limiter.plan("k", Limits(rpm=600, tpm=60000), None, None)
    lines = []
    for _ in range(3):
        admitted = limiter.take(plan, 100)
        assert isinstance(admitted, Admission)
        lines.append(admitted.head_lines)
        limiter.settle(admitted, 100)
        clock.now += 1.0  # both buckets full again
    assert lines[0] == lines[1] == lines[2]
