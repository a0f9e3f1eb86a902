"""A cut Realtime response's input, as the HTTP path counts a prompt (revgov review of
govacct): text outside ASCII by its UTF-8 bytes, four a token (`estimate.text_length`).
The tally counted a client message's characters: 1,500 Chinese characters, ~950 to
1,500 tokens Azure bills (gpt-4o's tokenizer to gpt-4's), were estimated at 375 when the
response was cut."""

from __future__ import annotations

from azure_openai_proxy.governance.estimate import text_length, tokens_for_chars
from tests.unit.test_realtime_tally import ResponseTally, created, event

CHINESE = "这是一个用于估算令牌的测试句子" * 100  # 1,500 characters, 4,500 bytes


def _input_tokens(message: str | bytes) -> int:
    tally = ResponseTally()
    tally.sent(message)
    tally.feed(created("resp_1"))
    [usage] = tally.usages(0)
    return int(usage["input_token_details"]["text_tokens"])


def test_a_cut_responses_text_outside_ascii_counts_its_utf8_bytes() -> None:
    item = event("conversation.item.create", item={"type": "message", "role": "user",
                                                   "content": [{"type": "input_text",
                                                                "text": CHINESE}]})
    assert _input_tokens(item) == tokens_for_chars(text_length(item)) > 1_125
    assert _input_tokens(item.encode()) == _input_tokens(item)  # a binary frame: its bytes


def test_ascii_text_is_counted_as_before() -> None:
    item = event("conversation.item.create", item={"text": "y" * 3928})
    assert _input_tokens(item) == 1000
