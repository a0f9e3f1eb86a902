"""A key's TPM against a prompt outside ASCII, through the gateway with the openai SDK
(govacct audit): Chinese text runs about a token a character, and the reservation counted
a token per four characters, so a 1,500-character prompt Azure bills ~1,500 tokens for
was let through a key of 1,000 tokens a minute (reserved 376), again and again. Counted by
its UTF-8 bytes it is larger than the minute: refused before Azure is called."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.conftest import Emulator
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

CHINESE = "这是一个用于估算令牌的测试句子" * 100  # 1,500 characters, 4,500 bytes


@pytest.fixture
def client(governed: Governed) -> Iterator[openai.OpenAI]:  # noqa: F811
    _, secret = governed.key("cjk-tpm", limits=Limits(tpm=1000))
    yield governed.client(secret)


def test_a_chinese_prompt_larger_than_the_minute_is_refused_before_azure(
        client: openai.OpenAI, emulator: Emulator) -> None:
    before = len(emulator.requests())
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": CHINESE}], max_tokens=1)
    assert "larger than this key's tokens per minute" in str(refused.value)
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(emulator.requests()) == before  # never sent
    # a fifth of it fits: the refusal is the prompt's size, not the script
    answer = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": CHINESE[:300]}], max_tokens=1)
    assert answer.choices
