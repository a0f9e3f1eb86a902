"""Prompt text outside ASCII in the TPM reservation and the budget hold (govacct audit):
a token per four characters is OpenAI's rule for English, but a tokenizer works on
UTF-8 bytes, and Chinese, Japanese or Korean text runs about a token per character (3
bytes), an emoji a token or more (4 bytes). Counted by characters, a CJK prompt was
reserved a quarter of what Azure bills: a key got four times its TPM in a burst, and a
budget's concurrent requests were held at a quarter of their cost. Counted by UTF-8
bytes, ASCII text is estimated as before."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.gateway.governed import plain_chat_chars, request_estimate
from azure_openai_proxy.governance.estimate import estimate_tokens, estimated_usage, prompt_tokens

CJK = "这是一个测试句子用于估算" * 100  # 1,200 characters, 3,600 bytes of UTF-8


def _chat(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra}


def test_a_cjk_chat_prompt_is_reserved_by_its_utf8_bytes() -> None:
    body = _chat(CJK, max_tokens=1)
    assert plain_chat_chars(body) == 3600
    assert request_estimate(body, 1024, "chat/completions") == (900, 1)
    assert prompt_tokens(body) == 900
    assert estimate_tokens(body, 1024, "chat/completions") == 901


def test_ascii_prompts_are_estimated_as_before() -> None:
    body = _chat("abcd" * 300, max_tokens=1)
    assert plain_chat_chars(body) == 1200
    assert request_estimate(body, 1024, "chat/completions") == (300, 1)
    assert prompt_tokens(body) == 300


def test_text_outside_the_plain_chat_counts_its_bytes_too() -> None:
    # a part list, a Responses input, a tool's arguments, a schema's description
    parts = _chat([{"type": "text", "text": CJK}], max_tokens=1)
    assert prompt_tokens(parts) == 900
    assert prompt_tokens({"model": "gpt-4o", "input": CJK}) == 900
    assert prompt_tokens({"model": "gpt-4o", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": CJK}]}]}) == 900
    call: Any = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": CJK}}]}
    assert prompt_tokens({"model": "gpt-4o", "messages": [call]}) >= 900
    tool = {"type": "function", "function": {"name": "f", "description": CJK}}
    assert prompt_tokens({"model": "gpt-4o", "messages": [], "tools": [tool]}) >= 900


def test_an_emoji_is_a_token_at_least() -> None:
    assert prompt_tokens(_chat("\N{GRINNING FACE}" * 1000)) == 1000


def test_a_lone_surrogate_is_counted_not_raised() -> None:
    # JSON may carry "\ud800": no UTF-8 for it, still text the client sent
    assert prompt_tokens(_chat("\ud800" * 400)) == 300
    assert plain_chat_chars(_chat("\ud800" * 400)) == 1200


def test_a_stream_left_before_its_usage_estimates_the_prompt_the_same_way() -> None:
    usage = estimated_usage(_chat(CJK), 0)
    assert usage["prompt_tokens"] >= 900
