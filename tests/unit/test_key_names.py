"""A key's or team's name (governance/keys.py `parse_name`) and how a table shows one
(`printable`): control characters were refused, but the bidirectional overrides,
embeddings and isolates were taken, and they reorder what a terminal shows after them,
so "admin\u202etxt.exe" reads as another name in `keys list` (CVE-2021-42574's trick).
Joiners stay: Persian and emoji sequences use them."""

from __future__ import annotations

import pytest

from azure_openai_proxy.governance.keys import parse_name, printable

_BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
         "\u2069"]


@pytest.mark.parametrize("mark", _BIDI)
def test_a_name_with_a_bidirectional_formatting_character_is_refused(mark: str) -> None:
    with pytest.raises(ValueError, match="bidirectional"):
        parse_name(f"billing{mark}team")  # main: taken


@pytest.mark.parametrize("mark", _BIDI)
def test_a_stored_one_is_shown_as_a_question_mark(mark: str) -> None:
    assert printable(f"billing{mark}team") == "billing?team"  # main: the mark itself


@pytest.mark.parametrize("name", ["ZWNJ in Persian: \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
                                  "family \U0001f468\u200d\U0001f469\u200d\U0001f467",
                                  "R&D", "équipe"])
def test_names_in_other_scripts_and_emoji_are_taken_as_they_are(name: str) -> None:
    assert parse_name(name) == name and printable(name) == name


def test_control_characters_are_still_refused_and_shown_as_question_marks() -> None:
    with pytest.raises(ValueError, match="control"):
        parse_name("a\x1b[2Jb")
    assert printable("a\x1b[2Jb\x9b") == "a?[2Jb?"
