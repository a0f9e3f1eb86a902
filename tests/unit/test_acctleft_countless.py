"""`countless_usage`: a model's 2xx JSON answer whose usage has no count is estimated
from its prompt and the text it generated (every choice's message, refusal and tool call
arguments; a response's output text and function call arguments), never left free; one
with a count, an error answer and a background response's are kept as Azure sent them."""

from __future__ import annotations

import orjson

from azure_openai_proxy.gateway.answerusage import countless_usage
from azure_openai_proxy.governance.estimate import estimated_usage
from azure_openai_proxy.observability.record import RequestRecord

_CHAT = {"messages": [{"role": "user", "content": "hello there"}]}


def _record(context: int = 0) -> RequestRecord:
    record = RequestRecord("r", "POST")
    record.context_tokens = context
    return record


def test_a_chat_answer_is_estimated_from_all_its_generated_text() -> None:
    answer = orjson.dumps({"choices": [
        {"message": {"role": "assistant", "content": "abcd" * 5, "refusal": None}},
        {"message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": '{"a": 1}'}}]}},
        {"message": {"role": "assistant", "content": "ção"}}],  # 5 UTF-8 bytes
        "usage": {}})
    usage = countless_usage({}, answer, _CHAT, _record(), 200)
    assert usage == estimated_usage(_CHAT, 20 + 8 + 5)  # main: {} (0 tokens, $0)
    assert usage["estimated"] is True and usage["completion_tokens"] > 0
    nulls = {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
    assert countless_usage(nulls, answer, _CHAT, _record(), 200) == usage


def test_a_response_is_estimated_from_its_output_with_its_context() -> None:
    body = {"input": "hello there", "previous_response_id": "resp_0"}
    answer = orjson.dumps({"object": "response", "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "x" * 12,
                                         "annotations": []}]},
        {"type": "function_call", "name": "f", "arguments": "{}"}], "usage": {}})
    usage = countless_usage({}, answer, body, _record(context=40), 200)
    expected = estimated_usage(body, 14)
    assert usage["prompt_tokens"] == expected["prompt_tokens"] + 40
    assert usage["completion_tokens"] == expected["completion_tokens"]


def test_what_has_a_count_or_is_no_generation_is_kept() -> None:
    answer = b'{"choices": [{"message": {"content": "hi"}}], "usage": {}}'
    counted = {"prompt_tokens": 3, "completion_tokens": None}
    assert countless_usage(counted, answer, _CHAT, _record(), 200) is counted
    assert countless_usage({}, answer, _CHAT, _record(), 400) == {}
    background = {"input": "x", "background": True}
    assert countless_usage({}, answer, background, _record(), 200) == {}
    junk = countless_usage({}, b"not json", _CHAT, _record(), 200)
    assert junk == estimated_usage(_CHAT, 0)  # the prompt, at least
