"""Azure's quota headers with numbers no count is (session 23, branch advstream):
`float()` reads `inf`, `infinity` and `1e400` as infinity, which `int()` refused with an
OverflowError (a 500) and a cooldown took as the longest wait (a day)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.balancing.headers import remaining_quota, retry_after_seconds


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400", "nan", "-1"])
def test_a_number_no_count_is_is_ignored(value: str) -> None:
    assert remaining_quota({"x-ratelimit-remaining-requests": value,
                            "x-ratelimit-remaining-tokens": value}) == (None, None)
    assert retry_after_seconds({"retry-after-ms": value}) is None
    assert retry_after_seconds({"retry-after-ms": value, "retry-after": "3"}) == 3.0


def test_finite_numbers_still_count() -> None:
    assert remaining_quota({"x-ratelimit-remaining-requests": "1e300",
                            "x-ratelimit-remaining-tokens": " 7 "}) == (int(1e300), 7)
    assert retry_after_seconds({"retry-after": "1e300"}) == 86_400.0
