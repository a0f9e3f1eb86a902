from __future__ import annotations

import pytest

from azure_openai_proxy.emulator.ratelimit import DeploymentWindow, RateLimiter, estimate_cost


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_estimate_is_chars_over_four_plus_max_tokens() -> None:
    assert estimate_cost(400, 50) == 150
    assert estimate_cost(1, 0) == 1


def test_token_window_blocks_then_refills_after_a_minute() -> None:
    window = DeploymentWindow(tpm=1000, rpm=600)
    assert window.admit(0.0, 600).allowed
    assert window.admit(10.0, 300).allowed
    blocked = window.admit(20.0, 200)
    assert not blocked.allowed
    assert blocked.retry_after == pytest.approx(40.0)  # when the first 600 leave the window
    assert blocked.remaining_tokens == 100 and blocked.limited_by == "tokens"
    assert not window.admit(59.9, 200).allowed
    assert window.admit(60.0, 200).allowed


def test_retry_after_waits_for_enough_entries_to_expire() -> None:
    window = DeploymentWindow(tpm=1000, rpm=6000)
    for second in range(5):
        assert window.admit(float(second), 200).allowed
    verdict = window.admit(5.0, 500)
    assert not verdict.allowed
    assert verdict.retry_after == pytest.approx(57.0)  # the first three 200s must expire


def test_requests_limited_per_ten_seconds() -> None:
    window = DeploymentWindow(tpm=10_000_000, rpm=12)  # 2 per 10 s
    assert window.admit(0.0, 1).allowed
    assert window.admit(1.0, 1).allowed
    verdict = window.admit(2.0, 1)
    assert not verdict.allowed and verdict.retry_after == pytest.approx(8.0)
    assert verdict.remaining_requests == 0 and verdict.limited_by == "requests"
    assert window.admit(10.0, 1).allowed


def test_oversized_request_waits_for_an_empty_window_only() -> None:
    window = DeploymentWindow(tpm=100, rpm=60)
    assert window.admit(0.0, 5000).allowed
    assert not window.admit(1.0, 1).allowed


def test_limiter_uses_injected_clock_and_resets() -> None:
    clock = FakeClock()
    limiter = RateLimiter([("a", 100, 60), ("free", None, None)], clock)
    assert limiter.admit("free", 10**9) is None
    first = limiter.admit("a", 80)
    assert first is not None and first.allowed and first.remaining_tokens == 20
    second = limiter.admit("a", 80)
    assert second is not None and not second.allowed and second.retry_after == pytest.approx(60)
    clock.now += 60
    third = limiter.admit("a", 80)
    assert third is not None and third.allowed
    limiter.reset()
    peek = limiter.peek("a")
    assert peek is not None and peek.remaining_tokens == 100 and peek.limit_requests == 60


def test_shrunken_windows_keep_their_ratio() -> None:
    window = DeploymentWindow(tpm=100, rpm=6, token_window=6.0)
    assert window.request_window == 1.0
    assert window.admit(0.0, 10).allowed
    blocked = window.admit(0.5, 10)
    assert not blocked.allowed and blocked.retry_after == pytest.approx(0.5)
    assert window.admit(1.0, 95).allowed is False  # tokens: 10 + 95 > 100 until t=6
    assert window.admit(6.0, 95).allowed
