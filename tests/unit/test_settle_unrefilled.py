"""A settlement that gives tokens back reads no clock and leaves the bucket's stamp as
it is (governance/buckets.py's docstring): every later reading, refilled from the
stamp, finds the level that refilling first then giving back made (to rounding); a
debt (more used than reserved) is refilled first, as before."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.governance.buckets import MOST_DEBT_MINUTES, Subject, UsualLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter


class Clock:
    """A clock the test moves, counting its reads."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def _usual(clock: Clock) -> tuple[RateLimiter, UsualLimits]:
    limiter = RateLimiter(clock)
    usual = limiter.plan("k", Limits(rpm=60, tpm=6000), None, None).usual
    assert usual is not None
    return limiter, usual


def test_tokens_given_back_read_no_clock() -> None:
    clock = Clock()
    _, usual = _usual(clock)
    for settle in (lambda: usual.settle(500, 100),
                   lambda: usual.settle(500, None),
                   lambda: usual.settle_usage(
                       500, {"prompt_tokens": 30, "completion_tokens": 70})):
        usual.take(500)
        clock.now += 0.5
        reads = clock.reads
        settle()
        assert clock.reads == reads


def test_the_general_settle_gives_back_without_the_clock_too() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    held = limiter.admit([("key:k", Limits(tpm=6000))], 500)
    assert isinstance(held, Admission)
    clock.now += 0.5
    reads = clock.reads
    limiter.settle(held, 100)
    assert clock.reads == reads


def test_a_debt_is_refilled_first() -> None:
    # Full again by the time it ends: the refill past the cap does not pay the debt.
    clock = Clock()
    limiter, usual = _usual(clock)
    usual.take(600)
    clock.now += 60.0
    usual.settle(600, 1600)
    assert limiter.snapshot()["key:k"]["tokens"] == {
        "limit": 6000, "remaining": 5000, "reset_seconds": 10.0}


def _refilled_first(state: Subject, give_back: int, now: float) -> None:
    """The settlement as it was: the bucket refilled up to `now`, then given back."""
    cap = state.tpm
    assert cap is not None
    state.refill(now)
    level = state.tpm_level + give_back
    floor = -cap * MOST_DEBT_MINUTES  # a debt stands, down to a day's allowance
    state.tpm_level = cap if level > cap else floor if level < floor else level


_steps = st.lists(st.tuples(st.floats(0, 5), st.integers(0, 3000), st.integers(0, 4000),
                            st.booleans()), min_size=1, max_size=40)


@settings(max_examples=300)
@given(st.integers(100, 10_000), _steps)
def test_every_later_reading_finds_the_level_refilled_first(
        tpm: int, steps: list[tuple[float, int, int, bool]]) -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    usual = limiter.plan("k", Limits(rpm=1_000_000, tpm=tpm), None, None).usual
    assert usual is not None
    state = usual.state
    model = Subject("model")
    model.configure(Limits(rpm=1_000_000, tpm=tpm), clock.now)
    held: list[int] = []
    for seconds, tokens, used, settle in steps:
        clock.now += seconds
        model.refill(clock.now)
        lines = usual.take(tokens)
        if isinstance(lines, bytes):
            model.tpm_level -= tokens
            held.append(tokens)
        if settle and held:
            reserved = held.pop(0)
            usual.settle(reserved, used)
            _refilled_first(model, reserved - used if used else reserved, clock.now)
        state.refill(clock.now)
        model.refill(clock.now)
        assert math.isclose(state.tpm_level, model.tpm_level, rel_tol=1e-9, abs_tol=1e-6)
