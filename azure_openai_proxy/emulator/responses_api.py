"""The Responses API: the `response` object and its streamed event sequence. Pure.

Streamed, a text answer is exactly: response.created, response.in_progress,
response.output_item.added, response.content_part.added, response.output_text.delta
(one per burst), response.output_text.done, response.content_part.done,
response.output_item.done, response.completed (or response.incomplete). The hosted image tool's picture
(responses_image.py) is an `image_generation_call` item before the message. Reasoning
models first add and finish a `reasoning` item; a function call streams
response.function_call_arguments.delta/done instead of the text events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.generation import check_prompt_filter
from azure_openai_proxy.emulator.responses_image import (
    ImageCall,
    image_events,
    image_item,
    image_tool_usage,
)
from azure_openai_proxy.emulator.textgen import (
    TRIGGER_COMPLETION_FILTER,
    content_text,
    count_tokens,
    generate_tokens,
)
from azure_openai_proxy.emulator.toolcalls import ToolChoice, example_for_schema, split_arguments
from azure_openai_proxy.emulator.validation import invalid_type


@dataclass(frozen=True)
class ResponsePlan:
    """One response: its id, the visible tokens or function call, and why it ended."""

    id: str
    created: int
    deployment: EmulatedDeployment
    request: Mapping[str, Any]
    tokens: tuple[str, ...]
    tool: ToolChoice | None
    input_tokens: int
    reasoning_tokens: int
    incomplete_reason: str | None
    image: ImageCall | None = None  # the hosted image tool's picture (responses_image.py)


def input_text(body: Mapping[str, Any]) -> str:
    """All text of `instructions` and `input` (a string or a list of items)."""
    parts = [str(body.get("instructions") or "")]
    items = body.get("input")
    if isinstance(items, str):
        parts.append(items)
    elif isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping):
                parts.append(content_text(item.get("content")))
                if isinstance(item.get("output"), str):
                    parts.append(item["output"])
    return "\n".join(p for p in parts if p)


def input_items(body: Mapping[str, Any], response_id: str) -> list[dict[str, Any]]:
    """A response's input as its `input_items` lists them (oldest first), each with an
    id: a string is one user message; a message's string content one `input_text`."""
    given = body.get("input")
    items = ([{"role": "user", "content": given}] if isinstance(given, str)
             else [i for i in given if isinstance(i, Mapping)] if isinstance(given, list)
             else [])
    suffix = response_id.removeprefix("resp_")
    listed = []
    for n, item in enumerate(items):
        content = item.get("content")
        if "role" in item and isinstance(content, str):
            item = {**item, "content": [{"type": "input_text", "text": content}]}
        listed.append({"id": f"msg_{suffix}{n:03d}", "type": "message", "status": "completed",
                       **item})
    return listed


def plan_response(
    body: Mapping[str, Any], deployment: EmulatedDeployment, response_id: str, created: int,
    natural_tokens: int, image: ImageCall | None = None,
) -> ResponsePlan:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):  # Azure's 400, not a crash
        raise invalid_type("tools", "an array", tools)
    prompt = input_text(body)
    check_prompt_filter(prompt)
    limit = body.get("max_output_tokens")
    reasoning = natural_tokens if deployment.reasoning else 0
    if isinstance(limit, int):
        reasoning = min(reasoning, limit)
        limit -= reasoning
    tool = _function_call(body, prompt)
    tokens = generate_tokens(prompt, None, natural_tokens) if tool is None else []
    reason = None
    if TRIGGER_COMPLETION_FILTER in prompt and tool is None:
        tokens, reason = tokens[: max(1, len(tokens) // 2)], "content_filter"
    elif isinstance(limit, int) and limit < len(tokens):
        tokens, reason = tokens[:limit], "max_output_tokens"
    return ResponsePlan(
        id=response_id, created=created, deployment=deployment, request=body,
        tokens=tuple(tokens), tool=tool, input_tokens=count_tokens(prompt) + 3,
        reasoning_tokens=reasoning, incomplete_reason=reason, image=image,
    )


def _function_call(body: Mapping[str, Any], prompt: str) -> ToolChoice | None:
    tools = [
        t for t in body.get("tools") or ()
        if isinstance(t, Mapping) and t.get("type") == "function" and isinstance(t.get("name"), str)
    ]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    forced = choice.get("name") if isinstance(choice, Mapping) else None
    tool = next((t for t in tools if t["name"] == forced), tools[0])
    args = example_for_schema(tool.get("parameters") or {"type": "object"}, prompt, None)
    return ToolChoice(str(tool["name"]), orjson.dumps(args).decode())


def _ids(plan: ResponsePlan) -> tuple[str, str, str]:
    suffix = plan.id.removeprefix("resp_")
    return f"msg_{suffix}", f"rs_{suffix}", f"fc_{suffix}"


def _image_id(plan: ResponsePlan) -> str:
    return f"ig_{plan.id.removeprefix('resp_')}"


def _items(plan: ResponsePlan, *, done: bool) -> list[dict[str, Any]]:
    message_id, reasoning_id, call_id = _ids(plan)
    status = "completed" if done else "in_progress"
    items: list[dict[str, Any]] = []
    if plan.deployment.reasoning:
        items.append({"id": reasoning_id, "type": "reasoning", "summary": []})
    if plan.image is not None:
        items.append(image_item(plan.image, _image_id(plan), done=done))
    if plan.tool is not None:
        items.append({
            "id": call_id, "type": "function_call", "status": status,
            "call_id": f"call_{call_id[3:]}", "name": plan.tool.name,
            "arguments": plan.tool.arguments if done else "",
        })
    else:
        content = [_part(plan, done)] if done else []
        items.append({"id": message_id, "type": "message", "status": status,
                      "role": "assistant", "content": content})
    return items


def _part(plan: ResponsePlan, done: bool) -> dict[str, Any]:
    return {"type": "output_text", "text": "".join(plan.tokens) if done else "",
            "annotations": [], "logprobs": []}


def response_object(plan: ResponsePlan, *, status: str | None = None) -> dict[str, Any]:
    """The `response` object; `status` overrides the final one for the opening events."""
    final = "incomplete" if plan.incomplete_reason else "completed"
    done = status is None
    body = plan.request
    output_tokens = len(plan.tokens) + plan.reasoning_tokens
    if plan.tool is not None:
        output_tokens += count_tokens(plan.tool.arguments)
    return {
        "id": plan.id,
        "object": "response",
        "created_at": plan.created,
        "status": status or final,
        "background": body.get("background") is True,
        "error": None,
        "incomplete_details": {"reason": plan.incomplete_reason} if done and plan.incomplete_reason
        else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": plan.deployment.model,
        "output": _items(plan, done=True) if done else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": plan.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
            "total_tokens": plan.input_tokens + output_tokens,
        } if done else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
        **({"tool_usage": image_tool_usage(plan.image)}
           if done and plan.image is not None else {}),
    }


def response_events(plan: ResponsePlan, burst: int) -> list[tuple[dict[str, Any], int]]:
    """The streamed events in order, each with the number of tokens it carries."""
    events: list[tuple[dict[str, Any], int]] = []

    def emit(kind: str, tokens: int = 0, **fields: Any) -> None:
        events.append(({"type": kind, "sequence_number": len(events), **fields}, tokens))

    emit("response.created", response=response_object(plan, status="in_progress"))
    emit("response.in_progress", response=response_object(plan, status="in_progress"))
    opened, finished = _items(plan, done=False), _items(plan, done=True)
    for index, (item, final) in enumerate(zip(opened, finished, strict=True)):
        emit("response.output_item.added", output_index=index, item=item)
        if item["type"] == "message":
            _text_events(plan, emit, index, item["id"], burst)
        elif item["type"] == "image_generation_call":
            assert plan.image is not None
            for kind, fields in image_events(plan.image, item["id"], index):
                emit(kind, **fields)
        elif item["type"] == "function_call":
            assert plan.tool is not None
            pieces = split_arguments(plan.tool.arguments, max(1, len(plan.tool.arguments) // 16))
            for piece in pieces:
                emit("response.function_call_arguments.delta", 1, output_index=index,
                     item_id=item["id"], delta=piece)
            emit("response.function_call_arguments.done", output_index=index,
                 item_id=item["id"], arguments=plan.tool.arguments)
        emit("response.output_item.done", output_index=index, item=final)
    closing = "response.incomplete" if plan.incomplete_reason else "response.completed"
    emit(closing, response=response_object(plan))
    return events


def _text_events(plan: ResponsePlan, emit: Any, index: int, item_id: str, burst: int) -> None:
    where = {"output_index": index, "item_id": item_id, "content_index": 0}
    emit("response.content_part.added", **where, part=_part(plan, False))
    for start in range(0, len(plan.tokens), burst):
        piece = plan.tokens[start : start + burst]
        emit("response.output_text.delta", len(piece), **where, delta="".join(piece),
             logprobs=[])
    emit("response.output_text.done", **where, text="".join(plan.tokens), logprobs=[])
    emit("response.content_part.done", **where, part=_part(plan, True))
