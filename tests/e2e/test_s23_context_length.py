"""A prompt past the model's context window, through the gateway: Azure's 400
`context_length_exceeded` (emulated since session 23) reaches the client with its code,
param and message, and is not tried on another deployment of the pool (each would refuse
it the same way)."""

from __future__ import annotations

import pytest

from tests.e2e.pools import (
    NAMES,
    chat,
    chat_deployment,
    hits,
    pool_emulator,
    pool_gateway,
    pool_settings,
    sdk,
)


def test_context_length_exceeded_reaches_the_client_and_is_not_failed_over() -> None:
    from openai import BadRequestError

    small = tuple(chat_deployment(name, context_tokens=40) for name in NAMES)
    with pool_emulator(*small) as emulator, pool_gateway(
        pool_settings(emulator.url, [(n, {}) for n in NAMES])
    ) as gateway:
        client = sdk(gateway)
        assert chat(client, "short").choices[0].message.content  # 7 prompt tokens, no maximum: fits
        with pytest.raises(BadRequestError) as refused:
            chat(client, "word " * 30, max_tokens=20)
        error = refused.value.body
        assert isinstance(error, dict)
        assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
        assert error["message"] == (
            "This model's maximum context length is 40 tokens. However, you requested 56 "
            "tokens (36 in the messages, 20 in the completion). Please reduce the length of "
            "the messages or completion.")
        assert [status for _, status in hits(emulator)] == [200, 400]
