from __future__ import annotations

from azure_openai_proxy.governance.estimate import estimated_usage, prompt_chars, tokens_for_chars


def test_four_characters_a_token_rounded_up() -> None:
    assert [tokens_for_chars(n) for n in (0, 1, 4, 5, 400)] == [0, 1, 1, 2, 100]


def test_prompt_text_is_measured_in_every_request_shape() -> None:
    chat = {"messages": [{"role": "system", "content": "abcd"},
                         {"role": "user", "content": [{"type": "text", "text": "efgh"},
                                                      {"type": "image_url", "image_url": {"url": "x" * 99}}]}]}
    # the image's URL is not text; the picture counts as one (IMAGE_TOKENS, 4 chars each)
    assert prompt_chars(chat) == (8 + 765 * 4, 2)
    assert prompt_chars({"prompt": "abc"}) == (3, 0)
    assert prompt_chars({"input": [{"role": "user", "content": "abcdef"}]}) == (6, 0)
    assert prompt_chars(None) == (0, 0)


def test_an_estimate_is_never_zero_for_a_request_with_text_and_is_marked() -> None:
    usage = estimated_usage({"messages": [{"role": "user", "content": "hi"}]}, 0)
    assert usage["prompt_tokens"] > 0 and usage["estimated"] is True
    usage = estimated_usage({"messages": []}, 41)
    assert usage["completion_tokens"] == 11 and usage["total_tokens"] == 11


def test_every_text_counts_whatever_its_name_but_ids_and_binary_payloads() -> None:
    """The walk reads every string (a tool call's arguments, a function's output, a
    refusal, a reasoning summary), a token id as a token, and not a base64 payload or an
    id; the reservation (`prompt_tokens`) and a left stream's estimate (`prompt_chars`)
    read the same."""
    from azure_openai_proxy.governance.estimate import prompt_tokens

    chat = {"messages": [
        {"role": "assistant", "content": None, "refusal": "abcd",
         "tool_calls": [{"id": "call_123", "type": "function",
                         "function": {"name": "ef", "arguments": "ghij"}}]},
        {"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "A" * 999, "format": "wav"}},
            {"type": "file", "file": {"file_data": "B" * 999, "filename": "a.pdf"}}]}]}
    assert prompt_chars(chat) == (10, 2)
    assert prompt_tokens(chat) == 3
    responses = {"input": [{"type": "function_call_output", "call_id": "c", "output": "xy"},
                           {"type": "reasoning", "id": "rs", "encrypted_content": "C" * 99,
                            "summary": [{"type": "summary_text", "text": "zw"}]}]}
    assert prompt_chars(responses) == (4, 0)
    assert prompt_tokens({"prompt": [7] * 10}) == 10  # token ids, one token each
    assert prompt_tokens({"input": [[7] * 10, [True]]}) == 10  # a bool is not one


def test_a_stateless_turns_image_and_logprobs_passed_back_are_not_text() -> None:
    """`input += response.output` (a client that keeps no response stored) passes back an
    image generation's base64 `result` and an output text's `logprobs`: read as text
    they were 500,000 tokens for a 2 MB picture, ~100 for each token of a text with
    `top_logprobs: 20`; the picture counts as an image, the text as its characters."""
    picture = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
               "result": "iVBORw0KGgo" * 200_000, "revised_prompt": "a cat"}
    token = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}
    said = {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
            "content": [{"type": "output_text", "text": "Hi", "annotations": [],
                         "logprobs": [{**token, "top_logprobs": [token] * 20}]}]}
    chars, _ = prompt_chars({"input": [{"role": "user", "content": "draw"}, picture, said]})
    assert chars == len("draw") + 765 * 4 + len("a cat") + len("Hi")
