"""The per-key and per-team limiter, on a clock the test moves."""

from __future__ import annotations

import gc
import itertools
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from azure_openai_proxy.governance.estimate import estimate_tokens
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import (
    DEFAULT_COMPLETION_TOKENS,
    Admission,
    RateLimiter,
    Refusal,
)
from azure_openai_proxy.governance.ratelimitheaders import duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admitted(result: Admission | Refusal) -> Admission:
    assert isinstance(result, Admission), result
    return result


def refused(result: Admission | Refusal) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


def test_rpm_admits_the_minute_in_a_burst_then_at_the_refill_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    subjects = [("key:a", Limits(rpm=5))]
    results = [limiter.admit(subjects, 0) for _ in range(20)]
    assert sum(isinstance(r, Admission) for r in results) == 5
    refusal = refused(results[5])
    assert refusal.kind == "requests" and abs(refusal.retry_after - 12.0) < 1e-6
    assert refusal.headers["x-ratelimit-limit-requests"] == "5"
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 12
    admitted(limiter.admit(subjects, 0))
    refused(limiter.admit(subjects, 0))


def test_tpm_reserves_then_settles_with_the_real_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    subjects = [("key:a", Limits(tpm=1000))]
    first = admitted(limiter.admit(subjects, 600))
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    refusal = refused(limiter.admit(subjects, 500))  # only 400 left
    assert refusal.kind == "tokens" and not refusal.never
    limiter.settle(first, 100)  # it used 100: 500 come back
    admitted(limiter.admit(subjects, 500))


def test_a_request_larger_than_the_minute_is_refused_for_good() -> None:
    limiter = RateLimiter(Clock())
    refusal = refused(limiter.admit([("key:a", Limits(tpm=1000))], 1001))
    assert refusal.never and refusal.retry_after == 60.0


def test_unknown_usage_gives_the_reservation_back() -> None:
    limiter = RateLimiter(Clock())
    subjects = [("key:a", Limits(tpm=1000))]
    limiter.settle(admitted(limiter.admit(subjects, 1000)), None)
    admitted(limiter.admit(subjects, 1000))


def test_usage_over_the_reservation_is_a_debt() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    subjects = [("key:a", Limits(tpm=600))]
    limiter.settle(admitted(limiter.admit(subjects, 100)), 700)  # 600 over: -100 left
    refused(limiter.admit(subjects, 1))
    clock.now += 11  # 10 a second: 110 back, 10 in the bucket
    admitted(limiter.admit(subjects, 10))


def test_parallel_slots_are_released_once() -> None:
    limiter = RateLimiter(Clock())
    subjects = [("key:a", Limits(max_parallel=2))]
    one = admitted(limiter.admit(subjects, 0))
    admitted(limiter.admit(subjects, 0))
    assert refused(limiter.admit(subjects, 0)).kind == "parallel"
    limiter.settle(one, None)
    limiter.settle(one, None)  # twice: still one slot freed
    admitted(limiter.admit(subjects, 0))
    assert refused(limiter.admit(subjects, 0)).kind == "parallel"


def test_key_and_team_must_both_pass_and_a_refusal_takes_nothing() -> None:
    limiter = RateLimiter(Clock())
    team = ("team:t", Limits(rpm=2))
    first = [("key:a", Limits(rpm=10)), team]
    second = [("key:b", Limits(rpm=1)), team]
    admitted(limiter.admit(first, 0))
    admitted(limiter.admit(second, 0))
    refusal = refused(limiter.admit(second, 0))
    assert refusal.subject == "key:b"
    assert refused(limiter.admit(first, 0)).subject == "team:t"  # the team's minute is spent
    snapshot = limiter.snapshot()
    assert snapshot["key:a"]["requests"]["remaining"] == 9  # the refusals took nothing


def test_changed_limits_apply_to_the_same_bucket() -> None:
    limiter = RateLimiter(Clock())
    admitted(limiter.admit([("key:a", Limits(rpm=10))], 0))
    # Lowered to 1: the 9 left are clamped to the new minute's 1.
    admitted(limiter.admit([("key:a", Limits(rpm=1))], 0))
    refusal = refused(limiter.admit([("key:a", Limits(rpm=1))], 0))
    assert refusal.headers["x-ratelimit-limit-requests"] == "1"
    admitted(limiter.admit([("key:a", Limits())], 0))  # no limit any more


def test_forget_drops_deleted_subjects_but_not_those_in_flight() -> None:
    limiter = RateLimiter(Clock())
    held = admitted(limiter.admit([("key:a", Limits(rpm=5))], 0))
    admitted(limiter.admit([("key:b", Limits(rpm=5))], 0))
    limiter.settle(admitted(limiter.admit([("key:c", Limits(rpm=5))], 0)), None)
    limiter.forget({"key:b"})
    assert set(limiter.snapshot()) == {"key:a", "key:b"}
    limiter.settle(held, None)


def test_estimate_counts_text_and_max_tokens() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400},
                         {"role": "user", "content": [{"type": "text", "text": "y" * 40}]}],
            "max_tokens": 50}
    assert estimate_tokens(body) == 110 + 50
    assert estimate_tokens({"input": "abcd", "max_output_tokens": 7}) == 8
    assert estimate_tokens({"prompt": "abcdefgh"}) == 2 + DEFAULT_COMPLETION_TOKENS
    assert estimate_tokens({"messages": [], "max_completion_tokens": 9}, 0) == 9
    assert estimate_tokens(None) == 0
    assert estimate_tokens({"max_tokens": True}, 3) == 3  # a bool is not a count


def test_durations_as_openai_writes_them() -> None:
    assert duration(0.02) == "20ms"
    assert duration(1.5) == "1.5s"
    assert duration(360) == "6m0s"
    assert duration(0) == duration(-1) == "0ms"
    assert duration(0.9996) == "1000ms"
    assert duration(2.0) == "2s" and duration(1.234) == "1.234s" and duration(1.2) == "1.2s"
    assert duration(59.9996) == "1m0s" and duration(361.25) == "6m1.25s"
    assert duration(1.5) == "1.5s"  # remembered: the same again


def test_headers_of_a_subject_with_one_limit_and_of_a_key_and_team() -> None:
    limiter = RateLimiter(Clock())
    only_rpm = admitted(limiter.take(limiter.plan("r", Limits(rpm=30), None, None), 5))
    assert only_rpm.headers == {
        "x-ratelimit-limit-requests": "30", "x-ratelimit-remaining-requests": "29",
        "x-ratelimit-reset-requests": "2s"}
    only_tpm = admitted(limiter.take(limiter.plan("t", Limits(tpm=600), None, None), 15))
    assert only_tpm.headers == {
        "x-ratelimit-limit-tokens": "600", "x-ratelimit-remaining-tokens": "585",
        "x-ratelimit-reset-tokens": "1.5s"}
    assert admitted(limiter.take(limiter.plan("n", Limits(), None, None), 5)).headers == {}
    # The tightest bucket of each kind, whichever subject has it.
    both = admitted(limiter.take(limiter.plan(
        "k", Limits(rpm=100, tpm=100), "team", Limits(rpm=10, tpm=1000)), 90))
    assert both.headers == {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "6s", "x-ratelimit-limit-tokens": "100",
        "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "54s"}


def test_estimate_reserves_a_completion_only_for_text_generating_operations() -> None:
    """Embeddings produce no completion: a TPM of 1,024 or less did refuse every one."""
    embedding = {"input": "abcd"}
    assert estimate_tokens(embedding, 1024, "embeddings") == 1
    assert estimate_tokens({"input": "abcd"}, 1024, "audio/speech") == 1
    assert estimate_tokens({"input_file_id": "f"}, 1024, "batches") == 0
    assert estimate_tokens({"prompt": "abcd"}, 300, "completions") == 1 + 300  # configured
    assert estimate_tokens({"messages": []}, 300, "chat/completions") == 300
    assert estimate_tokens({"input": "abcd"}, 300, "responses") == 1 + 300
    assert estimate_tokens({}, 300, "threads/thread_1/runs") == 300


def test_estimate_multiplies_the_completion_by_n() -> None:
    assert estimate_tokens({"messages": [], "max_tokens": 10, "n": 3}, 0,
                           "chat/completions") == 30
    assert estimate_tokens({"messages": [], "n": 4}, 100, "chat/completions") == 400
    assert estimate_tokens({"prompt": "", "max_tokens": 10, "n": 2, "best_of": 5}, 0,
                           "completions") == 50
    assert estimate_tokens({"messages": [], "max_tokens": 10, "n": True}, 0) == 10


def test_a_plan_is_made_once_per_version_of_a_keys_limits() -> None:
    """The request path configures a key's subjects when its limits change, not per
    request; the buckets outlive the plan."""
    limiter = RateLimiter(Clock())
    limits, team = Limits(rpm=3), Limits(rpm=10)
    plan = limiter.plan("k", limits, "t", team)
    assert limiter.plan("k", limits, "t", team) is plan
    admitted(limiter.take(plan, 0))
    admitted(limiter.take(plan, 0))
    reloaded = limiter.plan("k", Limits(rpm=3), "t", Limits(rpm=10))  # equal, new objects
    assert reloaded is not plan
    admitted(limiter.take(reloaded, 0))
    assert refused(limiter.take(reloaded, 0)).subject == "key:k"  # the same bucket
    assert limiter.plan("k", limits, "other", team) is not plan  # another team
    assert limiter.snapshot()["team:t"]["requests"]["remaining"] == 7
    limiter.forget({"key:k", "team:t"})  # a reload: plans are made again
    assert limiter.plan("k", limits, "t", team) is not plan


def test_take_refuses_on_the_first_limit_reached_and_names_it() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    plan = limiter.plan("k", Limits(rpm=100, tpm=1000, max_parallel=1), None, None)
    held = admitted(limiter.take(plan, 900))
    assert held.headers == {
        "x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-reset-requests": "600ms", "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "54s",
    }
    assert refused(limiter.take(plan, 0)).kind == "parallel"
    limiter.settle(held, 900)
    assert refused(limiter.take(plan, 200)).kind == "tokens"
    clock.now += 6  # 100 tokens back
    admitted(limiter.take(plan, 200))


def python_calls(work: Callable[[], object]) -> int:
    """How many Python functions `work` calls (not counting itself): the request path's
    cost that does not depend on the machine or the clock."""
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        calls += event == "call"

    # A collection during `work` would run other objects' finalizers (a generator's
    # close, a weakref callback from an earlier test) and count their calls: off here.
    collecting = gc.isenabled()
    gc.disable()
    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
        if collecting:
            gc.enable()
    return calls - 1


def test_a_governed_requests_limiter_work_is_a_handful_of_calls() -> None:
    """plan, take (and its headers and Admission) and settle: nothing per bucket, per
    subject or per header (it was 20 calls). The request path's own (`UsualLimits`, no
    plan looked up, no Admission): its take and its settle, nothing else, once the
    bucket's lines at that level were made (`bucket_lines`, three calls)."""
    limiter = RateLimiter(itertools.count(1000.0).__next__)  # a clock that is no Python call
    limits = Limits(rpm=600, tpm=100_000)
    admitted(limiter.take(limiter.plan("k", limits, None, None), 10))

    def request() -> None:
        held = limiter.take(limiter.plan("k", limits, None, None), 100)
        assert isinstance(held, Admission)
        limiter.settle(held, 90)

    assert python_calls(request) <= 8  # the lines at the new level made
    assert python_calls(request) <= 5
    usual = limiter.plan("k", limits, None, None).usual
    assert usual is not None

    def usual_request() -> None:
        assert isinstance(usual.take(100), bytes)
        usual.settle(100, 90)

    assert python_calls(usual_request) == 2


def test_a_chat_estimate_makes_no_call_per_message_or_field() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}] * 10,
            "max_tokens": 5}
    assert estimate_tokens(body, 0, "chat/completions") == 100 + 5
    assert python_calls(lambda: estimate_tokens(body, 0, "chat/completions")) <= 3


def test_a_plan_is_made_again_when_admit_changed_its_subjects_limits() -> None:
    """A plan's limits are applied when it is made: one kept after `admit` gave its
    subject a TPM limit would skip the token estimate the subject needs."""
    limiter = RateLimiter(Clock())
    limits = Limits(rpm=5)
    plan = limiter.plan("k", limits, None, None)
    assert not plan.counts_tokens
    admitted(limiter.admit([("key:k", Limits(rpm=5, tpm=100))], 10))
    again = limiter.plan("k", limits, None, None)
    assert again is not plan and not again.counts_tokens
    assert limiter.snapshot()["key:k"]["tokens"] is None  # the plan's limits, applied again
