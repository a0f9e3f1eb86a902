"""What the "model" answers: a plan of choices, tokens and usage for one request.

Pure. `plan_chat` and `plan_completions` read a validated body and return a
`GenerationPlan`; `frames.py` turns a plan into Azure's bodies and stream frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.emulator.textgen import (
    TRIGGER_COMPLETION_FILTER,
    TRIGGER_PROMPT_FILTER,
    chat_prompt_tokens,
    count_tokens,
    generate_tokens,
    messages_text,
    stable_hex,
)
from azure_openai_proxy.emulator.toolcalls import (
    ToolChoice,
    choose_function,
    choose_tool,
    example_for_schema,
)

_EFFORT = {"minimal": 0.25, "low": 0.5, "medium": 1.0, "high": 2.0}


@dataclass(frozen=True)
class ChoicePlan:
    """One choice: its visible tokens (or tool call) and why it ended."""

    index: int
    tokens: tuple[str, ...]
    finish_reason: str
    tool: ToolChoice | None = None
    legacy_function: bool = False

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        if self.tool is not None:
            return count_tokens(self.tool.arguments) + count_tokens(self.tool.name)
        return len(self.tokens)


@dataclass(frozen=True)
class GenerationPlan:
    """Everything needed to write one chat or completions answer, streamed or not."""

    id: str
    created: int
    model: str
    fingerprint: str | None
    choices: tuple[ChoicePlan, ...]
    prompt_tokens: int
    reasoning_tokens: int
    filter_key: str | None
    prompt_count: int = 1
    include_usage: bool = False
    async_filter: bool = False
    obfuscate: bool = False  # chat chunks carry an `obfuscation` padding field

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices) + self.reasoning_tokens


@dataclass(frozen=True)
class RequestFacts:
    """What the app knows about a request besides its body."""

    deployment: EmulatedDeployment
    request_id: str
    created: int
    filter_key: str | None
    natural_tokens: int


def check_prompt_filter(prompt: str) -> None:
    """The prompt trigger: Azure refuses the request before generating anything."""
    if TRIGGER_PROMPT_FILTER in prompt:
        raise wire_errors.prompt_filtered()


def plan_chat(
    body: Mapping[str, Any], facts: RequestFacts, prompt_tokens: int | None = None
) -> GenerationPlan:
    """The answer to a chat request; `prompt_tokens` when the caller has counted them."""
    messages = body["messages"]
    prompt = messages_text(messages)
    check_prompt_filter(prompt)
    seed = body.get("seed") if isinstance(body.get("seed"), int) else None
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    reasoning = 0
    if facts.deployment.reasoning:
        effort = _EFFORT.get(str(body.get("reasoning_effort", "medium")), 1.0)
        reasoning = max(1, int(facts.natural_tokens * effort))
        if isinstance(limit, int):
            reasoning = min(reasoning, limit)
            limit = limit - reasoning
    choices = []
    for index in range(int(body.get("n") or 1)):
        tool = choose_tool(body.get("tools"), body.get("tool_choice"), prompt, seed)
        legacy = False
        if tool is None:
            tool = choose_function(body.get("functions"), body.get("function_call"), prompt, seed)
            legacy = tool is not None
        if tool is not None:
            finish = "function_call" if legacy else "tool_calls"
            choices.append(ChoicePlan(index, (), finish, tool, legacy))
            continue
        tokens = _answer_tokens(body.get("response_format"), prompt, seed, index, facts)
        choices.append(_limited(index, tokens, limit, TRIGGER_COMPLETION_FILTER in prompt))
    options = body.get("stream_options")
    return GenerationPlan(
        id=f"chatcmpl-{facts.request_id}",
        created=facts.created,
        model=facts.deployment.model,
        fingerprint=f"fp_{stable_hex(facts.deployment.model, length=10)}",
        choices=tuple(choices),
        prompt_tokens=chat_prompt_tokens(messages) if prompt_tokens is None else prompt_tokens,
        reasoning_tokens=reasoning,
        filter_key=facts.filter_key,
        include_usage=isinstance(options, Mapping) and bool(options.get("include_usage")),
        async_filter=facts.deployment.async_filter,
        obfuscate=_obfuscated(facts.deployment.model, options),
    )


def _obfuscated(model: str, options: object) -> bool:
    """Whether the stream's chunks are padded: Azure's gpt-5 family pads them, as OpenAI
    does, unless `stream_options.include_obfuscation` is false (meilisearch#6341:
    gpt-5-mini's role chunk on Azure carries `obfuscation`; older models' do not)."""
    if not model.startswith("gpt-5"):
        return False
    return not (isinstance(options, Mapping) and options.get("include_obfuscation") is False)


def plan_completions(
    body: Mapping[str, Any], facts: RequestFacts, prompts: list[tuple[str, int]] | None = None
) -> GenerationPlan:
    """The answer to a completions request; `prompts` when the caller has listed them."""
    if prompts is None:
        prompts = prompt_list(body.get("prompt", "<|endoftext|>"))
    check_prompt_filter("\n".join(text for text, _ in prompts))
    seed = body.get("seed") if isinstance(body.get("seed"), int) else None
    limit = body.get("max_tokens", 16)
    n = int(body.get("n") or 1)
    choices = []
    for p_index, (text, _) in enumerate(prompts):
        for j in range(n):
            tokens = generate_tokens(text, seed, facts.natural_tokens, salt=j)
            if body.get("echo"):
                tokens = [text, *tokens]
                limit_here = limit + 1 if isinstance(limit, int) else limit
            else:
                limit_here = limit
            trigger = TRIGGER_COMPLETION_FILTER in text
            choices.append(_limited(p_index * n + j, tokens, limit_here, trigger))
    options = body.get("stream_options")
    return GenerationPlan(
        id=f"cmpl-{facts.request_id}",
        created=facts.created,
        model=facts.deployment.model,
        fingerprint=None,
        choices=tuple(choices),
        prompt_tokens=sum(count for _, count in prompts),
        reasoning_tokens=0,
        filter_key=facts.filter_key,
        prompt_count=len(prompts),
        include_usage=isinstance(options, Mapping) and bool(options.get("include_usage")),
    )


def prompt_list(prompt: object) -> list[tuple[str, int]]:
    """Normalize a completions `prompt` (string, strings, token array(s)) to (text, tokens)."""
    return [(text, count_tokens(text) if tokens is None else tokens)
            for text, tokens in _prompt_items(prompt)]


def prompt_texts(prompt: object) -> list[str]:
    """The texts of a completions `prompt`, without counting their tokens (a regex pass)."""
    return [text for text, _ in _prompt_items(prompt)]


def _prompt_items(prompt: object) -> list[tuple[str, int | None]]:
    """(text, tokens) for each prompt; tokens None for a string, not counted yet."""
    if isinstance(prompt, str):
        return [(prompt, None)]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [(" ".join(map(str, prompt)), len(prompt))]
    if isinstance(prompt, list) and prompt:
        out: list[tuple[str, int | None]] = []
        for item in prompt:
            if isinstance(item, str):
                out.append((item, None))
            elif isinstance(item, list) and all(isinstance(t, int) for t in item):
                out.append((" ".join(map(str, item)), len(item)))
            else:
                raise wire_errors.invalid_request(
                    "Invalid prompt: expected a string, array of strings or token arrays.",
                    "prompt",
                )
        return out
    raise wire_errors.invalid_request("Invalid prompt: it must not be empty.", "prompt")


def _answer_tokens(
    fmt: object, prompt: str, seed: int | None, index: int, facts: RequestFacts
) -> list[str]:
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return _chunked(orjson.dumps(example_for_schema(schema, prompt, seed)).decode())
    words = generate_tokens(prompt, seed, facts.natural_tokens, salt=index)
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        return _chunked(orjson.dumps({"answer": "".join(words)}).decode())
    return words


def _chunked(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _limited(index: int, tokens: list[str], limit: object, filtered: bool) -> ChoicePlan:
    if filtered:
        return ChoicePlan(index, tuple(tokens[: max(1, len(tokens) // 2)]), "content_filter")
    if isinstance(limit, int) and limit < len(tokens):
        return ChoicePlan(index, tuple(tokens[:limit]), "length")
    return ChoicePlan(index, tuple(tokens), "stop")
