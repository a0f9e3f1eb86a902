"""Counting input tokens (`responses/input_tokens`: no model runs, no deployment tokens
are spent) takes nothing from a key's TPM on every limiter path, the usual key's short
one (an RPM and a TPM, no team, no budget: `Gateway._governed`'s `usual.take`) too:
there the count's estimate was still reserved, so a key of RPM 100 and TPM 200 was
refused a count of a 2,500-character input (429, "larger than this key's tokens per
minute"). A key whose TPM is spent for a chat can still count."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.test_virtual_keys import Governed, governed  # noqa: F401  (fixture)

HI: Any = [{"role": "user", "content": "hello there, how are you today my friend?"}]
LONG = "word " * 500  # ~625 tokens by the estimate: more than the TPMs below


def _chat(client: Any, most: int) -> tuple[int, int]:
    """The chat's remaining tokens (its reservation taken) and what Azure said it used."""
    answer = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, max_tokens=most)
    return int(answer.headers["x-ratelimit-remaining-tokens"]), answer.parse().usage.total_tokens


@pytest.mark.parametrize("limits", [Limits(rpm=100, tpm=200), Limits(tpm=200),
                                    Limits(rpm=100, tpm=200, max_parallel=4)])
def test_counts_lower_no_remaining_tokens(governed: Governed,  # noqa: F811
                                          limits: Limits) -> None:
    _, secret = governed.key("counting", limits=limits)
    client = governed.client(secret)
    before, used = _chat(client, 20)
    for _ in range(3):
        assert client.responses.input_tokens.count(model="gpt-4o", input=LONG).input_tokens > 200
    # The same chat again, its reservation the same: the first chat's reservation was
    # replaced by what it used and the bucket only refills meanwhile; the counts took
    # nothing (each would have taken ~625).
    after, _ = _chat(client, 20)
    assert after >= before - used


def test_a_spent_tpm_still_counts_input_tokens(governed: Governed) -> None:  # noqa: F811
    _, secret = governed.key("spent", limits=Limits(tpm=80, rpm=100))
    client = governed.client(secret)
    assert _chat(client, 60)[0] < 20  # the chat reserved 71 of 80
    with pytest.raises(openai.RateLimitError) as spent:  # what it used is not back yet
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=60)
    assert spent.value.code == "rate_limit_exceeded"
    for _ in range(3):
        assert client.responses.input_tokens.count(model="gpt-4o", input=LONG).input_tokens > 80
