"""Prompt text the TPM reservation did not read (independent review of issue 13): read
by names (`content`, `text`, `input_text`, `arguments`), an assistant's `tool_calls`,
a Responses `function_call_output`, a reasoning summary, a refusal were free however
long, and so were a completions' or embeddings' token ids. Each one alone is larger
than the key's minute here: refused before it goes out, as its plain-text twin is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

BIG = "x" * 40_000  # 10,000 tokens by the gateway's rule, five times the minute's 2,000


@pytest.fixture
def client(governed: Governed) -> Iterator[openai.OpenAI]:  # noqa: F811
    _, secret = governed.key("small-tpm", limits=Limits(tpm=2000))
    yield governed.client(secret)


def _refused_before_azure(emulator: Emulator, call: Any) -> None:
    before = len(emulator.requests())
    with pytest.raises(openai.RateLimitError) as refused:
        call()
    assert "larger than this key's tokens per minute" in str(refused.value)
    assert len(emulator.requests()) == before  # never sent: nothing to pay


def test_an_assistants_tool_call_arguments_count(client: openai.OpenAI,
                                                 emulator: Emulator) -> None:
    messages: Any = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": BIG}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]
    _refused_before_azure(emulator, lambda: client.chat.completions.create(
        model="gpt-4o", messages=messages, max_tokens=1))
    # the same prompt, small, is served: the refusal is the arguments' size
    messages[1]["tool_calls"][0]["function"]["arguments"] = "{}"
    assert client.chat.completions.create(model="gpt-4o", messages=messages,
                                          max_tokens=1).choices


@pytest.mark.parametrize("message", [
    {"role": "assistant", "refusal": BIG},
    {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": BIG}},
])
def test_a_refusal_or_a_function_call_counts(client: openai.OpenAI, emulator: Emulator,
                                             message: dict[str, Any]) -> None:
    messages: Any = [{"role": "user", "content": "hi"}, message,
                     {"role": "user", "content": "again"}]
    _refused_before_azure(emulator, lambda: client.chat.completions.create(
        model="gpt-4o", messages=messages, max_tokens=1))


@pytest.mark.parametrize("item", [
    {"type": "function_call_output", "call_id": "c1", "output": BIG},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": BIG}]},
])
def test_a_responses_items_text_counts(client: openai.OpenAI, emulator: Emulator,
                                       item: dict[str, Any]) -> None:
    _refused_before_azure(emulator, lambda: client.responses.create(
        model="gpt-4o", input=[item], max_output_tokens=16))


def test_token_ids_count_a_token_each(client: openai.OpenAI, emulator: Emulator) -> None:
    ids = [1] * 20_000
    _refused_before_azure(emulator, lambda: client.embeddings.create(
        model="text-embedding-3-small", input=[ids]))
    _refused_before_azure(emulator, lambda: client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt=ids, max_tokens=1))
    assert client.embeddings.create(model="text-embedding-3-small", input=[[1] * 100]).data


@pytest.mark.parametrize("stream", [False, True])
def test_a_chained_turn_reserves_the_context_it_reads_again(
        client: openai.OpenAI, emulator: Emulator, stream: bool) -> None:
    """`previous_response_id`: Azure bills the previous response's input and output
    again as this turn's; the body carries only the new input."""
    first: Any = client.responses.create(model="gpt-4o", input="word " * 1500,
                                         max_output_tokens=16, stream=stream)
    if stream:
        events = list(first)
        first = events[-1].response
    assert first.usage.input_tokens + first.usage.output_tokens >= 1400
    # 600 new tokens and 16 more out: alone, under the key's 2,000 a minute (refused
    # before only for this minute's spend: a few seconds later it went through, its
    # context unreserved); with the context they read again, over the minute itself
    _refused_before_azure(emulator, lambda: client.responses.create(
        model="gpt-4o", input="x" * 2400, max_output_tokens=16,
        previous_response_id=first.id))


def test_a_conversations_turn_reserves_what_the_conversation_holds(
        client: openai.OpenAI, emulator: Emulator) -> None:
    """`conversation`: the conversation's items, which the previous turn read and wrote,
    are this turn's context too."""
    first: Any = client.responses.create(model="gpt-4o", input="word " * 1500,
                                         max_output_tokens=16, conversation="conv_1")
    assert first.usage.input_tokens + first.usage.output_tokens >= 1400
    _refused_before_azure(emulator, lambda: client.responses.create(
        model="gpt-4o", input="x" * 2400, max_output_tokens=16,
        conversation={"id": "conv_1"}))
