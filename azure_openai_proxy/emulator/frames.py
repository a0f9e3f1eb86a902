"""Azure's chat and completions bodies, and the exact stream frame sequence (section 4).

Pure: a `GenerationPlan` in, dicts out. A stream is a list of `StreamFrame`s; the app
writes each as `data: {json}` and the final `data: [DONE]`, waiting `tokens` x
token delay before each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.emulator.generation import ChoicePlan, GenerationPlan
from azure_openai_proxy.emulator.textgen import stable_hex
from azure_openai_proxy.emulator.toolcalls import split_arguments
from azure_openai_proxy.emulator.wire_errors import filter_verdict

_SEVERITY_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
FILTERED_CATEGORY = "violence"


@dataclass(frozen=True)
class StreamFrame:
    """One SSE frame: `data` None is the closing `[DONE]`; `tokens` paces its delay."""

    data: dict[str, Any] | None
    tokens: int = 0

    def encode(self) -> bytes:
        if self.data is None:
            return b"data: [DONE]\n\n"
        return b"data: " + orjson.dumps(self.data) + b"\n\n"


def safe_results() -> dict[str, Any]:
    return {name: {"filtered": False, "severity": "safe"} for name in _SEVERITY_CATEGORIES}


def prompt_results() -> dict[str, Any]:
    return {**safe_results(), "jailbreak": {"filtered": False, "detected": False}}


def completion_results(choice: ChoicePlan) -> dict[str, Any]:
    """Per-choice filter results; the completion trigger shows what was filtered."""
    if choice.finish_reason == "content_filter":
        verdict = filter_verdict(FILTERED_CATEGORY, "medium")
        verdict.pop("jailbreak")
        return verdict
    return {
        **safe_results(),
        "protected_material_code": {"filtered": False, "detected": False},
        "protected_material_text": {"filtered": False, "detected": False},
    }


def usage(plan: GenerationPlan, *, chat: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "completion_tokens": plan.completion_tokens,
        "prompt_tokens": plan.prompt_tokens,
        "total_tokens": plan.completion_tokens + plan.prompt_tokens,
    }
    if chat:
        out["completion_tokens_details"] = {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": plan.reasoning_tokens,
            "rejected_prediction_tokens": 0,
        }
        out["prompt_tokens_details"] = {"audio_tokens": 0, "cached_tokens": 0}
    return out


def _prompt_filter(plan: GenerationPlan) -> dict[str, Any]:
    if plan.filter_key is None:
        return {}
    return {
        plan.filter_key: [
            {"prompt_index": i, "content_filter_results": prompt_results()}
            for i in range(plan.prompt_count)
        ]
    }


def _call_id(plan: GenerationPlan, choice: ChoicePlan) -> str:
    return f"call_{stable_hex(plan.id, choice.index, length=24)}"


def _message(plan: GenerationPlan, choice: ChoicePlan) -> dict[str, Any]:
    message: dict[str, Any] = {"annotations": [], "content": choice.text, "refusal": None,
                               "role": "assistant"}
    if choice.tool is not None:
        message["content"] = None
        call = {"name": choice.tool.name, "arguments": choice.tool.arguments}
        if choice.legacy_function:
            message["function_call"] = call
        else:
            message["tool_calls"] = [
                {"id": _call_id(plan, choice), "type": "function", "function": call}
            ]
    return message


def chat_body(plan: GenerationPlan) -> dict[str, Any]:
    """The non-streamed `chat.completion` object as Azure returns it."""
    filtering = plan.filter_key is not None
    choices = []
    for choice in plan.choices:
        entry: dict[str, Any] = {
            "finish_reason": choice.finish_reason,
            "index": choice.index,
            "logprobs": None,
            "message": _message(plan, choice),
        }
        if filtering:
            entry["content_filter_results"] = completion_results(choice)
        choices.append(entry)
    return {
        "choices": choices,
        "created": plan.created,
        "id": plan.id,
        "model": plan.model,
        "object": "chat.completion",
        **_prompt_filter(plan),
        "system_fingerprint": plan.fingerprint,
        "usage": usage(plan, chat=True),
    }


def completions_body(plan: GenerationPlan) -> dict[str, Any]:
    """The non-streamed legacy `text_completion` object."""
    choices = []
    for choice in plan.choices:
        entry: dict[str, Any] = {
            "finish_reason": choice.finish_reason,
            "index": choice.index,
            "logprobs": None,
            "text": choice.text,
        }
        if plan.filter_key is not None:
            entry["content_filter_results"] = completion_results(choice)
        choices.append(entry)
    return {
        "choices": choices,
        "created": plan.created,
        "id": plan.id,
        "model": plan.model,
        "object": "text_completion",
        **_prompt_filter(plan),
        "system_fingerprint": plan.fingerprint,
        "usage": usage(plan, chat=False),
    }


def chat_stream(plan: GenerationPlan, burst: int) -> list[StreamFrame]:
    """Section 4, in order: prompt filter frame, then per choice the role frame,
    content bursts (or tool-call deltas; async-filter annotations in between), the
    finish frame; then the usage frame when asked for, then `[DONE]`."""
    frames = list(_opening(plan))
    for choice in plan.choices:
        frames.append(_chat_chunk(plan, choice, _role_delta(plan, choice), {}))
        if choice.tool is not None:
            frames.extend(_tool_deltas(plan, choice, burst))
        else:
            frames.extend(_content_frames(plan, choice, burst))
        finish = completion_results(choice) if choice.finish_reason == "content_filter" else {}
        frames.append(_chat_chunk(plan, choice, {}, finish, finish=choice.finish_reason))
    return frames + _closing(plan, "chat.completion.chunk", chat=True)


def completions_stream(plan: GenerationPlan, burst: int) -> list[StreamFrame]:
    """The legacy completions stream: prompt filter frame, text bursts, finish, [DONE]."""
    frames = list(_opening(plan))
    for choice in plan.choices:
        for start in range(0, len(choice.tokens), burst):
            piece = choice.tokens[start : start + burst]
            frames.append(
                StreamFrame(_text_chunk(plan, choice, "".join(piece), safe_results()), len(piece))
            )
        finish = completion_results(choice) if choice.finish_reason == "content_filter" else {}
        frames.append(StreamFrame(_text_chunk(plan, choice, "", finish, choice.finish_reason)))
    return frames + _closing(plan, "text_completion", chat=False)


def _opening(plan: GenerationPlan) -> Iterator[StreamFrame]:
    if plan.filter_key is not None:
        yield StreamFrame(
            {"choices": [], "created": 0, "id": "", "model": "", "object": "",
             **_prompt_filter(plan)}
        )


def _closing(plan: GenerationPlan, obj: str, *, chat: bool) -> list[StreamFrame]:
    frames = []
    if plan.include_usage:
        frames.append(
            StreamFrame(
                {"choices": [], "created": plan.created, "id": plan.id, "model": plan.model,
                 "object": obj, "system_fingerprint": plan.fingerprint,
                 "usage": usage(plan, chat=chat)}
            )
        )
    return [*frames, StreamFrame(None)]


def _role_delta(plan: GenerationPlan, choice: ChoicePlan) -> dict[str, Any]:
    if choice.tool is None:
        return {"content": "", "refusal": None, "role": "assistant"}
    if choice.legacy_function:
        return {"content": None, "function_call": {"arguments": "", "name": choice.tool.name},
                "role": "assistant"}
    header = {"function": {"arguments": "", "name": choice.tool.name},
              "id": _call_id(plan, choice), "index": 0, "type": "function"}
    return {"content": None, "refusal": None, "role": "assistant", "tool_calls": [header]}


def _tool_deltas(plan: GenerationPlan, choice: ChoicePlan, burst: int) -> Iterator[StreamFrame]:
    assert choice.tool is not None
    pieces = split_arguments(choice.tool.arguments, max(1, choice.completion_tokens // burst))
    for piece in pieces:
        if choice.legacy_function:
            delta: dict[str, Any] = {"function_call": {"arguments": piece}}
        else:
            delta = {"tool_calls": [{"function": {"arguments": piece}, "index": 0}]}
        yield StreamFrame(_chat_chunk(plan, choice, delta, {}).data, burst)


def _content_frames(plan: GenerationPlan, choice: ChoicePlan, burst: int) -> Iterator[StreamFrame]:
    if not plan.async_filter:
        for start in range(0, len(choice.tokens), burst):
            piece = choice.tokens[start : start + burst]
            delta = {"content": "".join(piece)}
            yield StreamFrame(_chat_chunk(plan, choice, delta, safe_results()).data, len(piece))
        return
    # The asynchronous filter streams token by token and annotates each checked span later.
    checked = 0
    offset = 0
    for position, token in enumerate(choice.tokens, start=1):
        yield StreamFrame(_chat_chunk(plan, choice, {"content": token}, {}).data, 1)
        offset += len(token)
        if position % burst == 0 or position == len(choice.tokens):
            yield StreamFrame(_annotation(choice, checked, offset))
            checked = offset


def _annotation(choice: ChoicePlan, start: int, end: int) -> dict[str, Any]:
    return {
        "choices": [
            {
                "content_filter_offsets": {
                    "check_offset": start, "start_offset": start, "end_offset": end
                },
                "content_filter_results": completion_results(choice),
                "finish_reason": None,
                "index": choice.index,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


def _chat_chunk(
    plan: GenerationPlan,
    choice: ChoicePlan,
    delta: dict[str, Any],
    results: dict[str, Any],
    finish: str | None = None,
) -> StreamFrame:
    # Azure's choice keys come sorted, content_filter_results first (azure-openai-wire.md
    # section 4); the gateway's steady-frame fast paths rely on that order.
    entry: dict[str, Any] = {} if plan.filter_key is None else {"content_filter_results": results}
    entry.update(delta=delta, finish_reason=finish, index=choice.index, logprobs=None)
    data: dict[str, Any] = {"choices": [entry], "created": plan.created, "id": plan.id,
                            "model": plan.model}
    if plan.obfuscate:
        data["obfuscation"] = _padding(delta)
    data.update(object="chat.completion.chunk", system_fingerprint=plan.fingerprint)
    return StreamFrame(data)


def _padding(delta: dict[str, Any]) -> str:
    """Characters that pad a chunk's delta towards a multiple of 16 bytes (OpenAI's
    `obfuscation` normalises payload sizes against side channels); stable for a delta."""
    shown = orjson.dumps(delta)
    return stable_hex(shown, length=16 - len(shown) % 16)


def _text_chunk(
    plan: GenerationPlan,
    choice: ChoicePlan,
    text: str,
    results: dict[str, Any],
    finish: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {} if plan.filter_key is None else {"content_filter_results": results}
    entry.update(finish_reason=finish, index=choice.index, logprobs=None, text=text)
    return {"choices": [entry], "created": plan.created, "id": plan.id, "model": plan.model,
            "object": "text_completion", "system_fingerprint": plan.fingerprint}
