"""`UsualLimits.take` answers with its last lines when both levels after the take are
the last take's (full buckets, the same request size): never once a limit changed,
even when the levels come out the same (`Subject._forget_lines` forgets them)."""

from __future__ import annotations

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.governance.ratelimitheaders import limit_lines, parse_lines
from tests.unit.test_usual_settle import Clock


def test_the_last_lines_are_said_again_only_for_the_same_limits() -> None:
    clock = Clock()
    usual = RateLimiter(clock).plan("k", Limits(rpm=60, tpm=6000), None, None).usual
    assert usual is not None
    first = usual.take(100)
    assert usual.take(100) != first  # a level lower: made anew
    usual.settle_usage(100, None)
    usual.settle_usage(100, None)
    clock.now += 60.0  # both full again
    assert usual.take(100) == first  # the same levels: the same lines
    # 400 more tokens taken (RPM 58, TPM 5,500 left); another worker raised the TPM
    # (the shared row): the levels stay, the cap is 12,000, refilled at 200 a second.
    # 2.5 s later the requests bucket is full again and the tokens level is 6,000:
    # after the take, the same levels as `first`'s, under another limit.
    assert usual.take(400) != first
    usual.state.follow(60.0, 12000.0, None)
    clock.now += 2.5
    lines = usual.take(100)
    assert isinstance(lines, bytes)
    assert (usual.state.rpm_level, usual.state.tpm_level) == (59.0, 5900.0)  # as `first`
    assert parse_lines(lines)["x-ratelimit-limit-tokens"] == "12000"
    assert lines == limit_lines((usual.state,))


def test_a_full_requests_bucket_with_another_request_size_says_its_own_lines() -> None:
    """The requests bucket full at both takes (its level after each one the same), the
    tokens bucket at another level: the second take's lines are its own, not the
    first's (the check of the tokens level, which only the Hypothesis comparison of
    test_ratelimit_only.py would otherwise catch, by chance)."""
    clock = Clock()
    usual = RateLimiter(clock).plan("k", Limits(rpm=60, tpm=6000), None, None).usual
    assert usual is not None
    first = usual.take(100)
    usual.settle_usage(100, None)
    clock.now += 60.0
    assert usual.take(100) == first  # full again: the first's lines said again
    usual.settle_usage(100, None)
    clock.now += 60.0
    other = usual.take(250)  # full again, but 250 tokens: remaining 5,750
    assert isinstance(other, bytes)
    assert parse_lines(other)["x-ratelimit-remaining-tokens"] == "5750"
    assert other == limit_lines((usual.state,))
    usual.settle_usage(250, None)
    clock.now += 60.0
    assert usual.take(100) == first  # and back to the first size: its lines again
