"""The arithmetic of a stored object's usage counted once (gateway/rereads.py): what
estimates of its cut streams counted (prompt, completion tokens; the last text delta
counted) taken off Azure's whole usage when a read counts it."""

from __future__ import annotations

from typing import Any

__all__ = ["less", "most"]


def most(spent: tuple[int, int, int], noted: tuple[int, int, int]) -> tuple[int, int, int]:
    """The larger of each of two estimates' counts (this worker's last may not be
    written yet)."""
    return (max(spent[0], noted[0]), max(spent[1], noted[1]), max(spent[2], noted[2]))


# A usage's counts, each with its details (a part of it: cached, reasoning, audio...).
_COUNTS = (("prompt_tokens", "prompt_tokens_details"), ("input_tokens", "input_tokens_details"),
           ("completion_tokens", "completion_tokens_details"),
           ("output_tokens", "output_tokens_details"))


def less(usage: dict[str, Any], spent: tuple[int, int, int]) -> dict[str, Any]:
    """`usage` less what estimates counted (`spent`: prompt, completion tokens): its
    prompt (input) count less theirs, its completion (output) count less theirs, none
    below 0; a detail (a part of a count: cached tokens, reasoning, audio) at most its
    count. The prompt an estimate put over Azure's is not given back: over- rather than
    under-counted."""
    left, total = dict(usage), 0
    for n, (name, details) in enumerate(_COUNTS):
        count = left.get(name)
        if type(count) is not int:
            continue
        left[name] = count = max(0, count - spent[n // 2])
        total += count
        parts = left.get(details)
        if type(parts) is dict:
            left[details] = {k: min(v, count) if type(v) is int else v
                             for k, v in parts.items()}
    if type(left.get("total_tokens")) is int:
        left["total_tokens"] = total
    return left
