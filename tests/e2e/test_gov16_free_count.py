"""Counting a request's input tokens (`responses/input_tokens`) runs no model: Azure
bills nothing and its deployment's tokens are not spent. So the gateway takes nothing
from the key's TPM for it (it still counts as a request). Before, the count's estimate
was reserved: a 40,000-character input to count was refused by a TPM of 5,000."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.governance.model import Limits
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

HI: Any = [{"role": "user", "content": "hello"}]


def _remaining_tokens(client: Any) -> int:
    answer = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, max_tokens=5)
    return int(answer.headers["x-ratelimit-remaining-tokens"])


def test_counting_input_tokens_takes_nothing_from_tpm(governed: Governed) -> None:  # noqa: F811
    _, secret = governed.key("tpm", limits=Limits(tpm=5_000))
    client = governed.client(secret)
    before = _remaining_tokens(client)
    long_input = "word " * 8_000  # ~10,000 tokens by the estimate: twice the TPM
    for _ in range(3):
        counted = client.responses.input_tokens.count(model="gpt-4o", input=long_input)
        assert counted.input_tokens > 5_000
    after = _remaining_tokens(client)
    # The chats between spent a few tokens each; the counts took none (they'd have
    # been refused outright, and had they fit, taken ~10,000 each).
    assert before - after < 100
