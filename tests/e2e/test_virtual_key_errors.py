"""An error Azure answers a virtual key (here the emulator's 400 for a malformed body,
which carries the deployment's own `x-ratelimit-*`, as Azure's does) reaches the client
with the key's limits, as its successful answers do: never the shared deployment's."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from tests.e2e.test_virtual_keys import Governed, governed

__all__ = ["governed"]  # the fixture, used by name


def test_azures_error_answer_carries_the_keys_limits(governed: Governed) -> None:
    _, secret = governed.key("limited", limits=Limits(rpm=50, tpm=100_000))
    client = governed.client(secret)
    bad: Any = "not a list of messages"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=bad)
    headers = refused.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "50"  # the key's, not Azure's 6000
    assert headers["x-ratelimit-remaining-requests"] == "49"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert "x-ratelimit-reset-requests" in headers and "x-ratelimit-reset-tokens" in headers
    # One of each: Azure's are gone, not joined with the key's.
    assert all("," not in value for name, value in headers.items()
               if name.startswith("x-ratelimit-"))
