"""A request's token cost as Azure estimates it on arrival (wire reference, section 5):
prompt characters / 4 plus `max_tokens`. Pure and cheap: the body's length stands for
the prompt's characters (a slight overestimate, which errs on the safe side)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["estimated_cost"]

_DEFAULT_COMPLETION = 16  # what Azure assumes when the request sets no maximum


def estimated_cost(body_size: int, body: Mapping[str, Any] | None) -> int:
    most: Any = None
    if body is not None:
        most = body.get("max_completion_tokens") or body.get("max_tokens") or body.get(
            "max_output_tokens"
        )
    if not isinstance(most, int) or isinstance(most, bool) or most < 0:
        most = _DEFAULT_COMPLETION
    copies = body.get("n") if body is not None else None
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 1:
        copies = 1
    completion: int = most * copies
    return -(-body_size // 4) + completion
