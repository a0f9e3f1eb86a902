"""`str.isdigit` holds for "²" and other digits `int` cannot read: a count or a duration
in them is refused cleanly (the emulator's `n` answered 500; a rotation's grace
`²d` raised int's own message)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.governance.keys import parse_duration


@pytest.mark.parametrize("text", ["²", "²d", "1²h", "③s"])
def test_a_duration_in_other_digits_is_refused_with_our_message(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)
    assert parse_duration("2d") == 2 * 86400 and parse_duration("1.5") == 1.5
