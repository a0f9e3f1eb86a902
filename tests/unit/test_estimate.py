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
