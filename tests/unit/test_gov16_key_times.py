"""A key's times are bounded where they are read (`parse_expiry`, `check_grace`), and a
row stored before that (a time no datetime can show) is shown clamped, never a 500 for
every list that names it (session 16's bad-input sweep)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.governance.keys import (
    LATEST,
    check_grace,
    key_view,
    parse_duration,
    parse_expiry,
)
from azure_openai_proxy.governance.model import VirtualKey

NOW = 1_796_000_000.0


@pytest.mark.parametrize("value", ["9999999d", 1e308, -1.0, float("nan"), float("inf"),
                                   "99999999999999999999999w", "9999-12-31T23:59:59-05:00",
                                   "0001-01-01T00:00:00+01:00", 10**30])
def test_an_expiry_out_of_range_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="expires"):
        parse_expiry(value, NOW)


def test_an_expiry_in_range_is_read_as_before() -> None:
    assert parse_expiry("30d", NOW) == NOW + 30 * 86400
    assert parse_expiry(NOW + 5, NOW) == NOW + 5
    assert parse_expiry("8999-12-31T00:00:00", NOW) < LATEST
    assert parse_expiry(None, NOW) is None and parse_expiry("never", NOW) is None


def test_a_grace_is_at_most_366_days() -> None:
    assert check_grace(parse_duration("366d")) == 366 * 86400
    for text in ("367d", "99999999999999999999999w"):
        with pytest.raises(ValueError):
            check_grace(parse_duration(text))


@pytest.mark.parametrize("stored", [1e300, -1e300, 1e20])
def test_a_row_stored_before_the_bounds_is_shown_clamped(stored: float) -> None:
    key = VirtualKey("k1", "k", "hash", "sk-aop-abc", expires_at=stored,
                     previous_valid_until=stored)
    view = key_view(key)
    assert view["expires_at"] in ("9999-12-31T23:59:59+00:00", "1970-01-01T00:00:00+00:00")
