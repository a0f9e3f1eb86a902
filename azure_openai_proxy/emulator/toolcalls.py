"""Plausible tool calls: which tool the model "chooses" and arguments that fit its schema.

Pure. The arguments are a JSON object built from the tool's `parameters` JSON Schema:
enums take their first value, strings a word derived from the prompt, numbers 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.emulator.textgen import generate_tokens


@dataclass(frozen=True)
class ToolChoice:
    """The function the model calls, and its arguments as a JSON string."""

    name: str
    arguments: str


def choose_tool(
    tools: object, tool_choice: object, prompt: str, seed: int | None
) -> ToolChoice | None:
    """The call for a `tools` request, or None when the model answers in text."""
    functions = [
        t["function"] for t in tools if _is_function_tool(t)
    ] if isinstance(tools, list) else []
    if not functions or tool_choice == "none":
        return None
    forced = _forced_name(tool_choice)
    chosen = next((f for f in functions if f.get("name") == forced), functions[0])
    return _call(chosen, prompt, seed)


def choose_function(
    functions: object, function_call: object, prompt: str, seed: int | None
) -> ToolChoice | None:
    """The same for the legacy `functions` / `function_call` parameters."""
    if not isinstance(functions, list) or not functions or function_call == "none":
        return None
    usable = [f for f in functions if isinstance(f, Mapping) and isinstance(f.get("name"), str)]
    if not usable:
        return None
    forced = function_call.get("name") if isinstance(function_call, Mapping) else None
    chosen = next((f for f in usable if f.get("name") == forced), usable[0])
    return _call(chosen, prompt, seed)


def example_for_schema(schema: object, prompt: str, seed: int | None, depth: int = 0) -> Any:
    """A value that satisfies the common parts of a JSON Schema (type, enum, properties)."""
    if not isinstance(schema, Mapping) or depth > 6:
        return "value"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        return {
            str(name): example_for_schema(sub, f"{prompt}/{name}", seed, depth + 1)
            for name, sub in props.items()
        }
    if kind == "array":
        return [example_for_schema(schema.get("items"), prompt, seed, depth + 1)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", 1)
        usable = isinstance(low, int | float) and not isinstance(low, bool) and abs(low) < 2**53
        value = low if usable else 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "".join(generate_tokens(prompt, seed, 2)).strip()


def _is_function_tool(tool: object) -> bool:
    return (
        isinstance(tool, Mapping)
        and tool.get("type", "function") == "function"
        and isinstance(tool.get("function"), Mapping)
        and isinstance(tool["function"].get("name"), str)
    )


def _forced_name(tool_choice: object) -> str | None:
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
        if isinstance(tool_choice.get("name"), str):
            return str(tool_choice["name"])
    return None


def _call(function: Mapping[str, Any], prompt: str, seed: int | None) -> ToolChoice:
    params = function.get("parameters") or {"type": "object", "properties": {}}
    args = example_for_schema(params, prompt, seed)
    if not isinstance(args, dict):
        args = {"value": args}
    return ToolChoice(name=str(function["name"]), arguments=orjson.dumps(args).decode())


def split_arguments(arguments: str, pieces: int) -> Sequence[str]:
    """Cut an arguments string into `pieces` roughly equal deltas, as streams send it."""
    if not arguments:
        return [""]
    size = max(1, -(-len(arguments) // max(1, pieces)))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]
