from __future__ import annotations

import math

from azure_openai_proxy.balancing import CircuitBreaker


def breaker() -> CircuitBreaker:
    return CircuitBreaker(threshold=3, open_seconds=10.0)


def test_opens_after_threshold_consecutive_failures_only() -> None:
    b = breaker()
    assert not b.failed(0.0) and not b.failed(1.0)
    b.succeeded()  # a success in between resets the count
    assert not b.failed(2.0) and not b.failed(3.0)
    assert b.state == "closed" and b.available(3.0)
    assert b.failed(4.0)
    assert b.state == "open"
    assert not b.available(13.9)
    assert b.available_at() == 14.0


def test_half_open_lets_exactly_one_probe_through() -> None:
    b = breaker()
    for t in range(3):
        b.failed(float(t))
    assert b.available(12.0)
    assert b.admit(12.0) is True
    assert b.state == "half-open"
    assert not b.available(12.0)
    assert b.admit(12.0) is False  # a second attempt is not the probe
    assert math.isinf(b.available_at())


def test_probe_success_closes_and_failure_reopens() -> None:
    b = breaker()
    for t in range(3):
        b.failed(float(t))
    b.admit(20.0)
    b.succeeded()
    assert b.state == "closed" and b.failures == 0 and b.available(20.0)

    for t in range(3):
        b.failed(30.0 + t)
    b.admit(50.0)
    assert b.failed(50.0)  # one failure while half-open reopens at once
    assert b.state == "open" and b.opened_until == 60.0


def test_an_abandoned_probe_lets_another_one_go() -> None:
    b = breaker()
    for t in range(3):
        b.failed(float(t))
    assert b.admit(15.0)
    b.abandoned()
    assert b.available(15.0) and b.admit(15.0)
