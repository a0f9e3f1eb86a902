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
    assert (usual.state.rpm_level, usual.state.tpm_level) == (59.0, 5900.0)  # as `first`
    assert parse_lines(lines)["x-ratelimit-limit-tokens"] == "12000"
    assert lines == limit_lines((usual.state,))
