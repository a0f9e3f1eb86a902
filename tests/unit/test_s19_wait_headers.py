"""The wait headers of a key's refusal, waited exactly, admit the request: `retry-after-ms`
is the longest wait of every bucket of the key and its team, and `x-ratelimit-reset-*`
is rounded up (found by session 19's review of a5db2aa)."""

from __future__ import annotations

from azure_openai_proxy.gateway.governed import limit_refusal
from azure_openai_proxy.governance.buckets import Refusal
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _seconds(text: str) -> float:
    """OpenAI's duration spelling (`59.999s`, `1m0s`, `20ms`) in seconds."""
    if text.endswith("ms"):
        return int(text[:-2]) / 1000
    minutes, _, rest = text.rpartition("m")
    return (int(minutes) * 60 if minutes else 0) + float(rest.rstrip("s"))


def test_waiting_x_ratelimit_reset_requests_refills_the_bucket() -> None:
    # OpenAI: reset-requests is the time until the requests bucket is back to its
    # initial state. With rpm=1 that is also the time until the next request fits.
    clock = Clock()
    limiter = RateLimiter(clock)
    subjects = [("key:a", Limits(rpm=1, tpm=1_000_000))]
    assert isinstance(limiter.admit(subjects, 1), Admission)
    clock.now += 0.0006  # the client asks again at once
    refusal = limiter.admit(subjects, 1)
    assert isinstance(refusal, Refusal)
    headers = limit_refusal(refusal).headers()
    reset = headers["x-ratelimit-reset-requests"]  # 59.9994 s: "60s", not "59.999s"
    clock.now += _seconds(reset) + 1e-6
    assert isinstance(limiter.admit(subjects, 1), Admission), (reset, headers["retry-after-ms"])


def _wait_told_then_admitted(limiter: RateLimiter, clock: Clock,
                             subjects: list[tuple[str, Limits]], tokens: int) -> Refusal:
    """The refusal of a request of `tokens`, after checking that waiting its
    `retry-after-ms` (and the microsecond of the way back) admits it."""
    refusal = limiter.admit(subjects, tokens)
    assert isinstance(refusal, Refusal)
    wait_ms = int(limit_refusal(refusal).headers()["retry-after-ms"])
    clock.now += wait_ms / 1000 + 1e-6
    again = limiter.admit(subjects, tokens)
    assert isinstance(again, Admission), (wait_ms, again)
    return refusal


def test_waiting_retry_after_ms_is_not_refused_by_the_subject_s_other_bucket() -> None:
    # Both buckets short: the refusal's wait was the requests bucket's alone, and the
    # client that waited it was refused again, on tokens (the SDKs retry twice).
    clock = Clock()
    limiter = RateLimiter(clock)
    subjects = [("key:a", Limits(rpm=60, tpm=6_000))]
    for _ in range(60):
        assert isinstance(limiter.admit(subjects, 100), Admission)   # both buckets empty
    refusal = _wait_told_then_admitted(limiter, clock, subjects, 1_000)
    assert refusal.kind == "tokens"  # the tokens' 10 s, not the request's 1 s
    assert refusal.retry_after == 10.0


def test_waiting_retry_after_ms_is_not_refused_by_the_team() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    subjects = [("key:a", Limits(tpm=6_000)), ("team:t", Limits(tpm=3_000))]
    assert isinstance(limiter.admit(subjects, 3_000), Admission)  # team empty, key half
    assert isinstance(limiter.admit([("key:a", Limits(tpm=6_000))], 3_000), Admission)  # key empty
    refusal = _wait_told_then_admitted(limiter, clock, subjects, 3_000)
    assert refusal.subject == "team:t"  # the team's minute, not the key's 30 s
    assert refusal.retry_after == 60.0


def test_an_sdk_client_that_retries_twice_on_retry_after_ms_gets_through() -> None:
    # openai-python: max_retries=2, sleeps retry-after-ms. Key: rpm and tpm; team: tpm.
    clock = Clock()
    limiter = RateLimiter(clock)
    key, team = ("key:a", Limits(rpm=60, tpm=6_000)), ("team:t", Limits(tpm=3_000))
    for _ in range(30):
        assert isinstance(limiter.admit([key, team], 100), Admission)  # team empty
    for _ in range(30):
        assert isinstance(limiter.admit([key], 100), Admission)  # key's both buckets empty
    waits = []
    for _attempt in range(3):
        outcome = limiter.admit([key, team], 1_000)
        if isinstance(outcome, Admission):
            break
        waits.append((outcome.subject, outcome.kind, limit_refusal(outcome).headers()["retry-after-ms"]))
        clock.now += int(waits[-1][2]) / 1000 + 1e-6
    assert isinstance(outcome, Admission), waits
