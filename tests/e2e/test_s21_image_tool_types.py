"""The Responses API's hosted image tool with a field of the wrong JSON type, through
the gateway to the emulator with the official `openai` SDK (session 21): Azure answers
400 `invalid_type` and the gateway relays it. The emulator answered 500 for a `quality`
that is a list (`in` a dict of qualities: unhashable), and the gateway's budget hold
reads the same fields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway  # noqa: F401
from tests.e2e.test_s19_image_tool import (  # noqa: F401
    TOOL,
    _client,
    _gateway,
    image_emulator,
)
from tests.support import ServerThread

# Each with the type Azure expects: a list where a string is, a string or a boolean
# where an integer is, a number where a string is, a string where an object is.
WRONG: list[tuple[str, Any, str]] = [
    ("quality", ["low"], "an array"),
    ("size", ["1024x1024"], "an array"),
    ("output_format", 1, "an integer"),
    ("background", {"transparent": True}, "an object"),
    ("moderation", True, "a boolean"),
    ("partial_images", "2", "a string"),
    ("partial_images", True, "a boolean"),
    ("output_compression", [50], "an array"),
    ("input_image_mask", "mask", "a string"),
]


@pytest.mark.parametrize("stream", [False, True])
def test_a_wrong_typed_field_of_the_image_tool_is_azures_400_through_the_gateway(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path, stream: bool,
) -> None:
    """With a hard budget, so the gateway's hold reads the tool's fields too."""
    gateway = _gateway(image_emulator, ledger_gateway)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics", budget_usd=5.0,
                             budget_period="daily")
    client = _client(gateway, secret)
    for name, value, got in WRONG:
        tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}},
                 {**TOOL[0], name: value}]
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="gpt-4o", input="draw a cat", tools=tools,  # type: ignore[arg-type]
                                    stream=stream)
        assert refused.value.code == "invalid_type", name
        assert refused.value.param == f"tools[1].{name}"
        assert f"but got {got} instead" in refused.value.message
    # the same tool with its fields of the right types makes its picture
    answer = client.responses.create(model="gpt-4o", input="draw a cat", tools=[
        {**TOOL[0], "output_format": "png", "background": "opaque", "partial_images": 0,
         "output_compression": 100, "moderation": "auto", "quality": None}])  # type: ignore[list-item]
    assert [item.type for item in answer.output] == ["image_generation_call", "message"]


# Values of the right type outside a field's list or range, and what Azure answers.
OUT_OF_RANGE: list[tuple[str, Any, str, str]] = [
    ("quality", "ultra", "invalid_value",
     "Supported values are: 'low', 'medium', 'high', and 'auto'."),
    ("size", "512x512", "invalid_value", "Invalid value: '512x512'."),
    ("output_format", "gif", "invalid_value", "'png', 'webp', and 'jpeg'"),
    ("moderation", "strict", "invalid_value", "'auto' and 'low'"),
    ("partial_images", 4, "integer_above_max_value", "Expected a value <= 3, but got 4"),
    ("output_compression", -1, "integer_below_min_value", "Expected a value >= 0"),
]


def test_a_value_outside_the_image_tools_list_is_azures_400_through_the_gateway(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The emulator took `quality: "ultra"` as high and `partial_images: 7` as 0 and made
    the picture; Azure refuses them, billing nothing."""
    gateway = _gateway(image_emulator, ledger_gateway)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics", budget_usd=5.0,
                             budget_period="daily")
    client = _client(gateway, secret)
    for name, value, code, text in OUT_OF_RANGE:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="gpt-4o", input="draw a cat",
                                    tools=[{**TOOL[0], name: value}])  # type: ignore[list-item]
        assert (refused.value.code, refused.value.param) == (code, f"tools[0].{name}"), name
        assert text in refused.value.message, refused.value.message
