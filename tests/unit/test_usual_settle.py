"""`UsualLimits.settle_usage` (chat's usage read in the settling call, the request
path's usual settlement) leaves a key's buckets as `settle` with the tokens
`used_tokens` reads from the same usage does: for every usage shape, it settles or
says False having touched nothing (then the caller settles with `used_tokens`)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.governed import used_tokens
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.observability.record import RequestRecord


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_count = st.one_of(st.integers(-50, 3000), st.booleans(), st.just(2.0), st.none())
_usage = st.one_of(
    st.none(), st.just({}),
    st.fixed_dictionaries({"prompt_tokens": _count, "completion_tokens": _count}),
    st.fixed_dictionaries({"prompt_tokens": _count}),
    st.fixed_dictionaries({"input_tokens": _count, "output_tokens": _count}),
    st.fixed_dictionaries({"prompt_tokens": _count, "completion_tokens": _count,
                           "total_tokens": _count}),
)
# Short waits and large reservations: the buckets are seldom full, where a wrong
# settlement would be capped away.
_steps = st.lists(st.tuples(st.floats(0, 2), st.integers(0, 3000), _usage, st.booleans()),
                  min_size=1, max_size=30)


@settings(max_examples=300)
@given(st.integers(1, 50), st.integers(1000, 5000), _steps)
def test_settle_usage_is_settle_with_used_tokens(
        rpm: int, tpm: int, steps: list[tuple[float, int, dict[str, Any] | None, bool]]) -> None:
    clocks = Clock(), Clock()
    limiters = RateLimiter(clocks[0]), RateLimiter(clocks[1])
    limits = Limits(rpm=rpm, tpm=tpm)
    usuals = [limiter.plan("k", limits, None, None).usual for limiter in limiters]
    assert usuals[0] is not None and usuals[1] is not None
    held: list[int] = []
    for seconds, tokens, usage, settle in steps:
        for clock in clocks:
            clock.now += seconds
        taken = usuals[0].take(tokens), usuals[1].take(tokens)
        assert taken[0] == taken[1]
        if isinstance(taken[0], bytes):
            held.append(tokens)
        if settle and held:
            reserved = held.pop(0)
            record = RequestRecord("r", "POST")
            record.usage = usage
            before = limiters[0].snapshot()
            if not usuals[0].settle_usage(reserved, usage):
                assert limiters[0].snapshot() == before  # nothing settled yet
                usuals[0].settle(reserved, used_tokens(record))
            usuals[1].settle(reserved, used_tokens(record))
        assert limiters[0].snapshot() == limiters[1].snapshot()


@pytest.mark.parametrize("usage", [
    None, {}, {"prompt_tokens": 30, "completion_tokens": 10},
    {"prompt_tokens": 0, "completion_tokens": 0}, {"prompt_tokens": -50, "completion_tokens": 10},
    {"prompt_tokens": 30, "completion_tokens": -10}, {"prompt_tokens": True, "completion_tokens": 3},
    {"prompt_tokens": 2.0, "completion_tokens": 3}, {"prompt_tokens": 30},
    {"input_tokens": 40, "output_tokens": 2}, {"prompt_tokens": 900, "completion_tokens": 900},
])
def test_each_usage_shape_settles_as_used_tokens_reads_it(usage: dict[str, Any] | None) -> None:
    # 1,500 of 2,000 reserved, no time passing: the bucket is far from full, so any
    # difference in the tokens given back shows in the level.
    results = []
    for short in (True, False):
        limiter = RateLimiter(Clock())
        usual = limiter.plan("k", Limits(rpm=5, tpm=2000), None, None).usual
        assert usual is not None and isinstance(usual.take(1500), bytes)
        record = RequestRecord("r", "POST")
        record.usage = usage
        if not (short and usual.settle_usage(1500, usage)):
            usual.settle(1500, used_tokens(record))
        results.append(limiter.snapshot())
    assert results[0] == results[1]
