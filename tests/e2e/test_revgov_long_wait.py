"""A key's TPM debt longer than the openai SDK sleeps, through the gateway (revgov review
of govacct): the 429 says `x-should-retry: false` beside its `retry-after` of minutes, so
that no SDK spends its retries on a wait it will not sleep (older releases and other SDKs
retried at once on their own backoff, refused each time); the SDK gives up at once."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.pools import FakeClock
from tests.e2e.test_govacct_debt import PROMPT, _known, keyed_gateway
from tests.waiting import until


def test_a_debt_of_minutes_says_not_to_retry(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []
    with (keyed_gateway(tmp_path, 1000, FakeClock()) as (_, gateway, secret),
          httpx.Client(event_hooks={"request": [sent.append]}, timeout=30) as http):
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, http_client=http,
                               max_retries=2)
        until(lambda: _known(client), timeout=10, message="the key never loaded")
        messages = [{"role": "user", "content": PROMPT[:3000]}]  # 751 reserved, ~3,000 billed
        assert client.chat.completions.create(model="gpt-4o", messages=messages,  # type: ignore[arg-type]
                                              max_tokens=1).choices
        before = len(sent)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=messages,  # type: ignore[arg-type]
                                           max_tokens=1)
        headers = refused.value.response.headers
        assert int(headers["retry-after"]) > 120
        assert headers["x-should-retry"] == "false"
        assert len(sent) == before + 1  # not retried
