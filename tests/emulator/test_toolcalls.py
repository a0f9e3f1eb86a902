from __future__ import annotations

import json

from azure_openai_proxy.emulator.toolcalls import (
    choose_function,
    choose_tool,
    example_for_schema,
    split_arguments,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 3},
                "detail": {"type": "object", "properties": {"hourly": {"type": "boolean"}}},
                "tags": {"type": "array", "items": {"type": "number"}},
                "note": {"type": ["null", "string"]},
            },
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def test_first_tool_by_default_with_schema_shaped_arguments() -> None:
    call = choose_tool([WEATHER, TIME], "auto", "what is the weather", None)
    assert call is not None and call.name == "get_weather"
    args = json.loads(call.arguments)
    assert isinstance(args["city"], str) and args["city"]
    assert args["unit"] == "celsius"
    assert args["days"] == 3
    assert args["detail"] == {"hourly": True}
    assert args["tags"] == [1.0]
    assert isinstance(args["note"], str)


def test_forced_tool_and_none() -> None:
    forced = {"type": "function", "function": {"name": "get_time"}}
    call = choose_tool([WEATHER, TIME], forced, "p", None)
    assert call is not None and call.name == "get_time" and json.loads(call.arguments) == {}
    assert choose_tool([WEATHER], "none", "p", None) is None
    assert choose_tool(None, "auto", "p", None) is None


def test_legacy_functions() -> None:
    functions = [WEATHER["function"], TIME["function"]]
    call = choose_function(functions, {"name": "get_time"}, "p", None)
    assert call is not None and call.name == "get_time"
    assert choose_function(functions, "none", "p", None) is None


def test_schema_examples_and_split() -> None:
    assert example_for_schema({"const": 7}, "p", None) == 7
    assert example_for_schema({"type": "null"}, "p", None) is None
    pieces = split_arguments('{"a": "bcdefg"}', 4)
    assert "".join(pieces) == '{"a": "bcdefg"}' and len(pieces) == 4
    assert split_arguments("", 3) == [""]
